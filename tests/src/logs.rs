//! What a service printed on stdout, line by line, each parsed as JSON, and waits for lines.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::eventually;

/// Log lines captured from a process's stdout, each parsed as JSON.
#[derive(Debug, Clone, Default)]
pub struct Logs {
    inner: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<Vec<String>>>,
}

impl Logs {
    pub(crate) fn push(&self, line: String) {
        let parsed = serde_json::from_str(&line).unwrap_or_else(|_| {
            // A line that is not one JSON object is a defect the tests must see.
            serde_json::json!({"unparseable_line": line})
        });
        self.raw.lock().expect("logs lock").push(line);
        self.inner.lock().expect("logs lock").push(parsed);
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<Value> {
        self.inner.lock().expect("logs lock").clone()
    }

    /// Every raw line so far, as printed.
    pub fn raw(&self) -> Vec<String> {
        self.raw.lock().expect("logs lock").clone()
    }

    /// Lines matching `filter`.
    pub fn matching(&self, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.all().into_iter().filter(|l| filter(l)).collect()
    }

    /// Waits (bounded by [`TIMEOUT`]) for `count` lines matching `filter`, and returns them.
    pub fn wait_for_n(&self, count: usize, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
        let lines = &self.inner;
        let found = eventually(format!("{count} matching log lines"))
            .every(Duration::from_millis(5))
            .try_until(|| {
                let found: Vec<Value> = lines
                    .lock()
                    .expect("logs lock")
                    .iter()
                    .filter(|l| filter(l))
                    .cloned()
                    .collect();
                if found.len() >= count {
                    Ok(found)
                } else {
                    Err(found.len())
                }
            });
        found.unwrap_or_else(|timed_out| {
            panic!(
                "{} (lines found); every line: {:#?}",
                timed_out.message,
                self.all()
            )
        })
    }

    /// Waits for one line matching `filter`.
    pub fn wait_for(&self, filter: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_n(1, filter).remove(0)
    }

    /// The `provider_call_failed` lines of the request with `request_id`, once the request's
    /// own line (always its last) has arrived, so none can still be on its way.
    pub fn failed_attempts(&self, request_id: &str) -> Vec<Value> {
        self.request_line(request_id);
        self.matching(|l| l["event"] == "provider_call_failed" && l["request_id"] == request_id)
    }

    /// The request log line of the request with `request_id`: the one with `endpoint` and no
    /// `event` (B's events about a replica, such as `endpoint_ejected`, carry an `endpoint`
    /// and the request id of the call that caused them).
    pub fn request_line(&self, request_id: &str) -> Value {
        self.wait_for(|l| {
            l["request_id"] == request_id && l.get("endpoint").is_some() && l.get("event").is_none()
        })
    }
}
