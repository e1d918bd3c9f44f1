//! A real Prometheus (Debian's `prometheus` package) scraping the services under test, and
//! queries against its HTTP API.
//!
//! Without the `prometheus` binary these tests are skipped with a visible line (see
//! [`crate::tools`]), except when `CI=true`, where a missing binary fails them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{client, eventually, vacant_addr};

/// The `Accept` header of a Prometheus scrape: OpenMetrics first, then the text format.
pub const SCRAPE_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// Whether `tool` (`prometheus` or `promtool`) can be run; a visible skip when not, a
/// failure in CI.
pub fn tool_available(tool: &str) -> bool {
    crate::tools::executable(tool, "apt-get install -y prometheus")
}

/// A scrape config for `targets` (job name, address), scraping every second.
pub fn scrape_config(targets: &[(&str, SocketAddr)]) -> String {
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, addr) in targets {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n        labels:\n          service: {job}\n"
        ));
    }
    config
}

/// `config` with the alert and recording rule files `rules` (absolute paths) loaded.
pub fn with_rules(mut config: String, rules: &[PathBuf]) -> String {
    config.push_str("rule_files:\n");
    for rule in rules {
        config.push_str(&format!("  - '{}'\n", rule.display()));
    }
    config
}

/// The project's rule files, `deploy/prometheus/rules/*.yml`.
pub fn project_rules() -> Vec<PathBuf> {
    let dir = crate::repo_root().join("deploy/prometheus/rules");
    let mut rules: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/prometheus/rules")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yml"))
        .collect();
    rules.sort();
    rules
}

/// `promtool check config` on `path`; panics with promtool's words if it finds a problem.
pub fn promtool_check_config(path: &std::path::Path) {
    let output = Command::new("promtool")
        .args(["check", "config"])
        .arg(path)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool check config {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running Prometheus, killed and its data removed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// Base URL of its HTTP API.
    pub url: String,
}

impl Prometheus {
    /// Starts Prometheus with `config` (checked with promtool first) and waits until ready.
    /// `None` when the binary is missing outside CI.
    pub fn start(config: &str) -> Option<Self> {
        if !tool_available("prometheus") || !tool_available("promtool") {
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "prometheus-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        promtool_check_config(&config_path);

        let addr = vacant_addr();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            // As in deploy/compose.yaml: keep the exemplars the services attach to buckets.
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Self {
            child,
            dir,
            url: format!("http://{addr}"),
        };
        prometheus.wait_ready();
        Some(prometheus)
    }

    fn wait_ready(&self) {
        let ready = format!("{}/-/ready", self.url);
        eventually("prometheus to be ready")
            .every(Duration::from_millis(50))
            .until(|| blocking_get_status(&ready) == Some(200));
    }

    /// Runs an instant query; returns each series' labels and value.
    pub async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url)).expect("url");
        url.query_pairs_mut().append_pair("query", promql);
        let reply = client().get(url).send().await.expect("query sent");
        let body: Value = reply.json().await.expect("query answer is JSON");
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (series["metric"].clone(), value)
            })
            .collect()
    }

    /// The exemplars of `promql` over the last `window_secs`: each as `(series labels,
    /// exemplar labels, value)`.
    pub async fn query_exemplars(
        &self,
        promql: &str,
        window_secs: u64,
    ) -> Vec<(Value, Value, f64)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut url =
            reqwest::Url::parse(&format!("{}/api/v1/query_exemplars", self.url)).expect("url");
        url.query_pairs_mut()
            .append_pair("query", promql)
            .append_pair("start", &(now - window_secs).to_string())
            .append_pair("end", &(now + 1).to_string());
        let reply = client().get(url).send().await.expect("query sent");
        let body: Value = reply.json().await.expect("answer is JSON");
        assert_eq!(body["status"], "success", "{promql}: {body}");
        let mut found = Vec::new();
        for series in body["data"].as_array().cloned().unwrap_or_default() {
            for exemplar in series["exemplars"].as_array().cloned().unwrap_or_default() {
                let value = exemplar["value"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                found.push((
                    series["seriesLabels"].clone(),
                    exemplar["labels"].clone(),
                    value,
                ));
            }
        }
        found
    }

    /// The alerts Prometheus holds now (`/api/v1/alerts`): each one's labels and state
    /// (`pending` or `firing`).
    pub async fn alerts(&self) -> Vec<(Value, String)> {
        let reply = client()
            .get(format!("{}/api/v1/alerts", self.url))
            .send()
            .await
            .expect("alerts asked");
        let body: Value = reply.json().await.expect("alerts answer is JSON");
        assert_eq!(body["status"], "success", "{body}");
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|alert| {
                let state = alert["state"].as_str().unwrap_or_default().to_owned();
                (alert["labels"].clone(), state)
            })
            .collect()
    }

    /// Waits (bounded) until `promql` returns one series with value `expected`.
    pub async fn wait_for_value(&self, promql: &str, expected: f64) {
        eventually(format!("{promql} to return {expected}"))
            .every(Duration::from_millis(200))
            .until_async(async || {
                let result = self.query(promql).await;
                if result.len() == 1 && (result[0].1 - expected).abs() < 1e-9 {
                    Ok(())
                } else {
                    Err(result)
                }
            })
            .await;
    }
}

/// Status of a plain GET, without an async runtime (for start-up polling).
fn blocking_get_status(url: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
