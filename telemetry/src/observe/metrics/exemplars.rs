//! Exemplars and the OpenMetrics exposition, which metrics-exporter-prometheus lacks.
//!
//! The exporter keeps recording every sample and renders the Prometheus text format. This
//! module adds the two things a histogram bucket needs to lead to a trace:
//! - [`Exemplars`]: per histogram series and bucket, the latest *sampled* request that fell
//!   in it (trace id, span id, value, time). One per bucket, so memory is bounded by the
//!   series, which are bounded by their labels.
//! - [`to_openmetrics`]: rewrites the exporter's text into OpenMetrics 1.0 (counter and info
//!   families named without their suffix, `# EOF` at the end) and appends each bucket's
//!   exemplar, which is what a Prometheus with exemplar storage reads and Grafana shows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::observe::traces::SpanIds;

/// One sampled observation that fell in a bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// W3C trace id, 32 hex digits.
    pub trace_id: String,
    /// W3C span id, 16 hex digits.
    pub span_id: String,
    /// The observed value.
    pub value: f64,
    /// When, in seconds since the Unix epoch.
    pub timestamp: f64,
}

/// The exemplars of one histogram series: one slot per bucket (the last is `+Inf`).
#[derive(Debug)]
pub struct Slots {
    bounds: Arc<[f64]>,
    latest: Mutex<Vec<Option<Exemplar>>>,
}

impl Slots {
    /// Keeps `value` as its bucket's exemplar, with the ids of the span it came from.
    pub fn record(&self, value: f64, trace_id: &str, span_id: &str) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = latest.get_mut(bucket) {
            *slot = Some(Exemplar {
                trace_id: trace_id.to_owned(),
                span_id: span_id.to_owned(),
                value,
                timestamp,
            });
        }
    }

    fn at(&self, le: f64) -> Option<Exemplar> {
        let bucket = if le.is_infinite() {
            self.bounds.len()
        } else {
            self.bounds.iter().position(|bound| *bound == le)?
        };
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bucket)
            .cloned()
            .flatten()
    }
}

/// One histogram series whose buckets keep, as exemplars, the latest *sampled*
/// observations: what a service registers where a bucket should lead to a trace.
#[derive(Debug, Clone)]
pub struct ExemplarHistogram {
    histogram: metrics::Histogram,
    exemplars: Arc<Slots>,
}

impl ExemplarHistogram {
    /// Registers histogram `name` with `labels`, and its exemplar slots in `exemplars` (the
    /// store of the service's [`crate::observe::Metrics`]: see
    /// [`crate::observe::Metrics::exemplar_histogram`]).
    pub fn register(
        exemplars: &Exemplars,
        name: &'static str,
        labels: &[(&'static str, String)],
    ) -> Self {
        Self {
            histogram: metrics::histogram!(name, labels),
            exemplars: exemplars.slots(name, labels),
        }
    }

    /// Records `value`, observed in the span with `ids`: its bucket's exemplar when the span
    /// is sampled (an unsampled span leads nowhere).
    pub fn record(&self, value: f64, ids: &SpanIds) {
        self.histogram.record(value);
        if ids.sampled {
            self.exemplars.record(value, ids.trace_id(), ids.span_id());
        }
    }
}

/// Every histogram series' exemplar slots, by metric name and label set.
#[derive(Debug, Clone)]
pub struct Exemplars {
    bounds: Arc<[f64]>,
    series: Arc<RwLock<HashMap<String, Arc<Slots>>>>,
}

impl Exemplars {
    /// A store for histograms with these bucket bounds (the exporter's).
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.into(),
            series: Arc::default(),
        }
    }

    /// The slots of histogram `name` with `labels` (registered on first use; keep the
    /// handle, as the metric handles are kept).
    pub fn slots(&self, name: &str, labels: &[(&str, String)]) -> Arc<Slots> {
        let key = series_key(name, labels.iter().map(|(k, v)| (*k, v.as_str())));
        if let Some(slots) = self.read().get(&key) {
            return slots.clone();
        }
        let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
        series
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Slots {
                    bounds: self.bounds.clone(),
                    latest: Mutex::new(vec![None; self.bounds.len() + 1]),
                })
            })
            .clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Slots>>> {
        self.series.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The exemplar of the bucket `le` of histogram `name` with `labels` (not counting `le`).
    fn find(&self, name: &str, labels: &[(&str, &str)], le: f64) -> Option<Exemplar> {
        let key = series_key(name, labels.iter().copied());
        self.read().get(&key)?.at(le)
    }
}

/// `name{k="v",…}` with the labels sorted, so the exporter's order does not matter.
fn series_key<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut labels: Vec<(&str, &str)> = labels.collect();
    labels.sort_unstable();
    let mut key = name.to_owned();
    for (k, v) in labels {
        let _ = write!(key, "\u{1f}{k}={v}");
    }
    key
}

/// Content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Rewrites the Prometheus text exposition `text` as OpenMetrics 1.0, with `exemplars` on
/// histogram buckets. Each family's metadata comes as `# TYPE`, `# UNIT` (for a name ending
/// in a unit: `_seconds`, `_bytes`) and `# HELP`, in that order; `target_info` comes first,
/// as the OpenTelemetry–Prometheus compatibility rules ask; `le` values are canonical
/// floats (`1.0`, not `1`).
pub fn to_openmetrics(text: &str, exemplars: &Exemplars) -> String {
    let families = families(text);
    let mut out = String::with_capacity(text.len() + 512);
    let (target, others): (Vec<&Family>, Vec<&Family>) =
        families.iter().partition(|f| f.name == "target");
    for family in target.into_iter().chain(others) {
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        if let Some(unit) = UNITS
            .iter()
            .find(|u| family.name.ends_with(&format!("_{u}")))
        {
            let _ = writeln!(out, "# UNIT {} {unit}", family.name);
        }
        if let Some(help) = &family.help {
            let _ = writeln!(out, "# HELP {} {help}", family.name);
        }
        for sample in &family.samples {
            let sample = canonical_le(sample);
            out.push_str(&sample);
            if family.kind == "histogram"
                && let Some(exemplar) = bucket_exemplar(&sample, &family.name, exemplars)
            {
                let _ = write!(
                    out,
                    " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
                    exemplar.trace_id, exemplar.span_id, exemplar.value, exemplar.timestamp
                );
            }
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Units a family name may end in, given as `# UNIT`.
const UNITS: [&str; 2] = ["seconds", "bytes"];

/// One metric family of the text format: its OpenMetrics name and type, help, samples.
#[derive(Debug, Default)]
struct Family {
    name: String,
    kind: String,
    help: Option<String>,
    samples: Vec<String>,
}

/// The families of a text exposition, in order.
fn families(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    // A family's metadata comes before its samples; a new name starts a new family.
    let current = |families: &mut Vec<Family>, name: &str| {
        if families.last().is_none_or(|f| f.name != name) {
            families.push(Family {
                name: name.to_owned(),
                kind: "unknown".to_owned(),
                ..Family::default()
            });
        }
        families.len() - 1
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = family(name, kind);
            let index = current(&mut families, name);
            families[index].kind = kind.to_owned();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = name
                .strip_suffix("_total")
                .or_else(|| name.strip_suffix("_info"))
                .unwrap_or(name);
            let index = current(&mut families, name);
            families[index].help = Some(help.to_owned());
        } else if !line.starts_with('#') {
            match families.last_mut() {
                Some(family) => family.samples.push(line.to_owned()),
                None => families.push(Family {
                    name: String::new(),
                    kind: "unknown".to_owned(),
                    samples: vec![line.to_owned()],
                    ..Family::default()
                }),
            }
        }
    }
    families
}

/// `sample` with its `le` label's value as a canonical float (`le="1"` becomes `le="1.0"`).
fn canonical_le(sample: &str) -> String {
    let Some(start) = sample.find("le=\"").map(|i| i + 4) else {
        return sample.to_owned();
    };
    let Some(length) = sample[start..].find('"') else {
        return sample.to_owned();
    };
    let value = &sample[start..start + length];
    let canonical = match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v.fract() == 0.0 => format!("{v:.1}"),
        Ok(v) if v.is_finite() => format!("{v}"),
        _ => return sample.to_owned(),
    };
    format!(
        "{}{canonical}{}",
        &sample[..start],
        &sample[start + length..]
    )
}

/// The OpenMetrics family name and type of a text-format `# TYPE` line.
fn family<'a>(name: &'a str, kind: &'a str) -> (&'a str, &'a str) {
    match kind {
        "counter" => (name.strip_suffix("_total").unwrap_or(name), kind),
        "gauge" if name.ends_with("_info") => (name.strip_suffix("_info").unwrap_or(name), "info"),
        _ => (name, kind),
    }
}

/// The exemplar for a `…_bucket{…,le="x"} n` sample line of histogram `family`, if it has
/// one.
fn bucket_exemplar(line: &str, family: &str, exemplars: &Exemplars) -> Option<Exemplar> {
    let (series, _value) = line.rsplit_once(' ')?;
    let (name, labels) = series.split_once('{')?;
    if name.strip_suffix("_bucket")? != family {
        return None;
    }
    let labels = parse_labels(labels.strip_suffix('}')?)?;
    let le = labels.iter().find(|(k, _)| *k == "le")?.1.clone();
    let le: f64 = if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().ok()?
    };
    let rest: Vec<(&str, &str)> = labels
        .iter()
        .filter(|(k, _)| *k != "le")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    exemplars.find(family, &rest, le)
}

/// `k="v",k2="v2"` (values escaped as the text format escapes them) into pairs.
fn parse_labels(text: &str) -> Option<Vec<(&str, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP http_server_request_duration_seconds Duration of HTTP server requests
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_route=\"/token\",le=\"0.001\"} 1
http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_route=\"/token\",le=\"1.05\"} 2
http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_route=\"/token\",le=\"+Inf\"} 2
http_server_request_duration_seconds_sum{http_request_method=\"POST\",http_route=\"/token\"} 1.0015
http_server_request_duration_seconds_count{http_request_method=\"POST\",http_route=\"/token\"} 2

# HELP token_requests_total POST /token requests by outcome
# TYPE token_requests_total counter
token_requests_total{outcome=\"issued\"} 2

# TYPE target_info gauge
target_info{service_name=\"service-a\"} 1
";

    fn store() -> Exemplars {
        let exemplars = Exemplars::new(&[0.001, 1.05]);
        let slots = exemplars.slots(
            "http_server_request_duration_seconds",
            // Another order than the exporter's: lookups sort.
            &[
                ("http_route", "/token".to_owned()),
                ("http_request_method", "POST".to_owned()),
            ],
        );
        slots.record(
            0.0005,
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        );
        slots.record(
            1.0005,
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
        );
        exemplars
    }

    #[test]
    fn each_bucket_gets_the_exemplar_that_fell_in_it() {
        let text = to_openmetrics(TEXT, &store());
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} in {text}"))
                .to_owned()
        };
        let fast = line(
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_route=\"/token\",le=\"0.001\"} 1 # {",
        );
        assert!(fast.contains("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.0005 "), "{fast}");
        let slow = line(
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_route=\"/token\",le=\"1.05\"}",
        );
        assert!(
            slow.contains("trace_id=\"0af7651916cd43dd8448eb211c80319c\""),
            "{slow}"
        );
        let inf = line(
            "http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_route=\"/token\",le=\"+Inf\"}",
        );
        assert!(!inf.contains('#'), "nothing fell above 1.05 s: {inf}");
    }

    #[test]
    fn families_are_named_as_openmetrics_wants_and_the_text_ends_in_eof() {
        let text = to_openmetrics(TEXT, &store());
        assert!(text.contains("# TYPE token_requests counter\n"));
        assert!(text.contains("# HELP token_requests POST /token requests by outcome\n"));
        assert!(text.contains("token_requests_total{outcome=\"issued\"} 2\n"));
        assert!(text.contains("# TYPE target info\n"));
        assert!(text.contains("target_info{service_name=\"service-a\"} 1\n"));
        assert!(!text.contains("\n\n"), "no blank lines");
        assert!(text.ends_with("\n# EOF\n"));
    }

    #[test]
    fn metadata_comes_type_unit_help_with_target_info_first_and_le_canonical() {
        let text = to_openmetrics(TEXT, &store());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# TYPE target info", "{text}");
        let duration = lines
            .iter()
            .position(|l| l.starts_with("# TYPE http_server_request_duration_seconds "))
            .expect("the histogram");
        assert_eq!(
            &lines[duration..duration + 3],
            [
                "# TYPE http_server_request_duration_seconds histogram",
                "# UNIT http_server_request_duration_seconds seconds",
                "# HELP http_server_request_duration_seconds Duration of HTTP server requests",
            ]
        );
        assert!(text.contains("le=\"0.001\""), "{text}");
        assert!(text.contains("le=\"1.05\""), "{text}");
        assert!(text.contains("le=\"+Inf\""), "{text}");
        assert_eq!(
            canonical_le("x_bucket{a=\"b\",le=\"10\"} 3"),
            "x_bucket{a=\"b\",le=\"10.0\"} 3"
        );
        assert!(
            !text.contains("# UNIT token_requests"),
            "no unit where the name has none"
        );
    }

    #[test]
    fn label_values_with_escapes_are_read_back() {
        let labels = parse_labels(r#"a="x\"y",b="1\\2",le="0.5""#).expect("parses");
        assert_eq!(
            labels,
            vec![
                ("a", "x\"y".to_owned()),
                ("b", "1\\2".to_owned()),
                ("le", "0.5".to_owned())
            ]
        );
    }

    #[test]
    fn unknown_series_and_plain_lines_get_no_exemplar() {
        let exemplars = Exemplars::new(&[1.0]);
        assert!(bucket_exemplar("x_bucket{le=\"1\"} 3", "x", &exemplars).is_none());
        assert!(bucket_exemplar("up 1", "up", &exemplars).is_none());
    }
}
