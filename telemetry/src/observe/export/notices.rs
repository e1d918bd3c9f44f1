//! What telemetry lost, said on stderr: a sink that is slow, full or gone is counted (see
//! [`crate::observe::export::losses`]), and a person watching the terminal learns of it here,
//! at most once every [`NOTICE_INTERVAL`], and once more at shutdown.

use std::io::Write as _;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::observe::export::losses::{Count, Losses, Pipeline};
use crate::observe::logs::line::ObjectWriter;

/// Shortest time between two lines on stderr about losses.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// How many kinds of loss stderr reports.
const KINDS: usize = 11;

/// The lost counts that stderr reports, in a fixed order with their names.
fn totals(l: &Losses) -> [(&'static str, u64); KINDS] {
    let failed = |p: &Pipeline| p.export_failed.iter().map(Count::get).sum::<u64>();
    [
        ("log_lines_queue_full", l.log_lines.queue_full.get()),
        ("log_lines_write_failed", l.log_lines.write_failed.get()),
        ("log_lines_shutdown", l.log_lines.shutdown.get()),
        ("spans_queue_full", l.spans.queue_full.get()),
        ("spans_export_failed", failed(&l.spans)),
        ("spans_already_shutdown", l.spans.already_shutdown.get()),
        ("spans_shutdown", l.spans.shutdown.get()),
        ("log_records_queue_full", l.log_records.queue_full.get()),
        ("log_records_export_failed", failed(&l.log_records)),
        (
            "log_records_already_shutdown",
            l.log_records.already_shutdown.get(),
        ),
        ("log_records_shutdown", l.log_records.shutdown.get()),
    ]
}

/// The thread that says on stderr what was lost: at most one line every
/// [`NOTICE_INTERVAL`], with what was lost since the previous line, and a last one at
/// shutdown. It is the only writer of stderr here, so a stderr nobody reads blocks nothing
/// but this thread.
#[derive(Debug)]
pub struct Notices {
    stop: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

impl Notices {
    /// Starts the thread for `service`, reporting what `losses` counts.
    pub fn start(service: &'static str, losses: &'static Losses) -> Self {
        let (stop, stopped) = mpsc::channel();
        let (finished, done) = mpsc::channel();
        let _ = std::thread::Builder::new()
            .name("telemetry-notices".into())
            .spawn(move || {
                let mut reported = [0u64; KINDS];
                let mut last = Instant::now() - NOTICE_INTERVAL;
                loop {
                    // A stop, or the service gone without one: report and end.
                    let stopping = !matches!(
                        stopped.recv_timeout(Duration::from_secs(1)),
                        Err(RecvTimeoutError::Timeout)
                    );
                    if stopping || last.elapsed() >= NOTICE_INTERVAL {
                        let now = totals(losses);
                        if now.iter().zip(&reported).any(|((_, n), r)| n > r) {
                            notice(service, &now, &reported);
                            reported = now.map(|(_, n)| n);
                            last = Instant::now();
                        }
                    }
                    if stopping {
                        let _ = finished.send(());
                        return;
                    }
                }
            });
        Self { stop, done }
    }

    /// Reports what is left to report, waiting at most `grace` for stderr.
    pub fn finish(self, grace: Duration) {
        let _ = self.stop.send(());
        let _ = self.done.recv_timeout(grace);
    }
}

/// One line on stderr: the losses since the previous one, as a JSON object shaped like
/// every log line (`deploy/log-line.schema.json`): `service`, `event` `telemetry_lost`, a
/// count for each kind of loss, where to look, `ts` and `level`.
fn notice(service: &str, now: &[(&'static str, u64); KINDS], reported: &[u64; KINDS]) {
    let mut text = notice_line(service, now, reported, std::time::SystemTime::now());
    text.push('\n');
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
}

fn notice_line(
    service: &str,
    now: &[(&'static str, u64); KINDS],
    reported: &[u64; KINDS],
    at: std::time::SystemTime,
) -> String {
    let mut line = ObjectWriter::new("telemetry_lost", String::new(), |_| false);
    line.string("service", service);
    line.string("event", "telemetry_lost");
    for ((name, total), before) in now.iter().zip(reported) {
        if total > before {
            line.integer(name, total - before);
        }
    }
    line.string("see", "log_lines_dropped_total and otel_sdk_* on /metrics");
    line.timestamp("ts", at);
    line.string("level", "WARN");
    line.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_is_a_log_line_naming_each_loss() {
        let mut now = totals(&Losses::default());
        for (n, (_, count)) in now.iter_mut().enumerate() {
            *count = n as u64 * 10;
        }
        let mut reported = [0; KINDS];
        reported[6] = 60;
        let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_489_599_123);
        let line: serde_json::Value =
            serde_json::from_str(&notice_line("service-a", &now, &reported, at)).expect("JSON");
        assert_eq!(line["service"], "service-a");
        assert_eq!(line["event"], "telemetry_lost");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["ts"], "2025-11-30T07:59:59.123Z");
        assert_eq!(line["spans_queue_full"], 30);
        assert_eq!(line["log_records_shutdown"], 100);
        assert!(
            line.get("spans_shutdown").is_none(),
            "nothing new: left out"
        );
        assert!(line.get("log_lines_queue_full").is_none(), "zero: left out");
    }
}
