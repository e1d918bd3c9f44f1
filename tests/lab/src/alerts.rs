//! Alerts an earlier lab left behind: `lab start` lists those still pending or firing, each
//! with an upper bound of how long it may go on. An alert's expression reads its series over
//! range windows (`rate(…[5m])`, directly or through recording rules), so once its cause is
//! gone it stays true at most as long as its longest window (plus its `keep_firing_for`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

/// An alert pending or firing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// Its name.
    pub name: String,
    /// Its `slo` label, for the SLO alerts.
    pub slo: Option<String>,
    /// `pending` or `firing`.
    pub state: String,
    /// How long it may go on after its cause has gone, at most.
    pub lasts_at_most: Duration,
}

/// The alerts pending or firing in a Prometheus `/api/v1/rules` answer, by name.
pub fn active(rules: &Value) -> Vec<Active> {
    let all: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .collect();
    let mut found = Vec::new();
    for rule in all.iter().filter(|r| r["type"] == "alerting") {
        let query = rule["query"].as_str().unwrap_or_default();
        let keep_firing = rule["keepFiringFor"].as_f64().unwrap_or(0.0).max(0.0);
        let lasts_at_most = longest_window(query, &all, &mut BTreeSet::new())
            + Duration::from_secs_f64(keep_firing);
        for alert in rule["alerts"].as_array().into_iter().flatten() {
            let state = alert["state"].as_str().unwrap_or_default();
            if state != "pending" && state != "firing" {
                continue;
            }
            found.push(Active {
                name: rule["name"].as_str().unwrap_or_default().to_owned(),
                slo: alert["labels"]["slo"].as_str().map(str::to_owned),
                state: state.to_owned(),
                lasts_at_most,
            });
        }
    }
    found.sort_by(|a, b| (&a.name, &a.slo).cmp(&(&b.name, &b.slo)));
    found.dedup();
    found
}

/// The longest range window `query` reads, through the recording rules it names (each rule
/// of a name: the SLO rules record one name per SLO).
fn longest_window(query: &str, rules: &[&Value], seen: &mut BTreeSet<String>) -> Duration {
    let mut longest = windows(query).into_iter().max().unwrap_or_default();
    let names = query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| !word.is_empty());
    for name in names {
        if !seen.insert(name.to_owned()) {
            continue;
        }
        for rule in rules
            .iter()
            .filter(|r| r["type"] == "recording" && r["name"] == name)
        {
            let recorded = rule["query"].as_str().unwrap_or_default();
            longest = longest.max(longest_window(recorded, rules, seen));
        }
    }
    longest
}

/// Every range in `query`: `[5m]`, and a subquery's range `[1h:1m]`.
fn windows(query: &str) -> Vec<Duration> {
    query
        .split('[')
        .skip(1)
        .filter_map(|rest| rest.split(']').next())
        .filter_map(|range| duration(range.split(':').next().unwrap_or_default().trim()))
        .collect()
}

/// A Prometheus duration: `30s`, `5m`, `1h30m`, `1d`, `500ms`.
pub fn duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => {
                total += Duration::from_millis(number);
                rest = &rest[unit_len..];
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "y" => 365 * 86_400,
            _ => return None,
        };
        total += Duration::from_secs(number.checked_mul(seconds)?);
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// What `lab start` says of them: one line each, or nothing when there are none.
pub fn describe(active: &[Active]) -> Vec<String> {
    if active.is_empty() {
        return Vec::new();
    }
    let label = |a: &Active| match &a.slo {
        Some(slo) => format!("{} (slo {slo})", a.name),
        None => a.name.clone(),
    };
    let width = active.iter().map(|a| label(a).len()).max().unwrap_or(0);
    let mut lines = vec![
        "Alerts still active from before this lab (each ends on its own once its cause is gone, \
         at the latest after its longest range window):"
            .to_owned(),
    ];
    for alert in active {
        let ends = if alert.lasts_at_most.is_zero() {
            "as soon as its cause is gone".to_owned()
        } else {
            format!("within {}", humantime::format_duration(alert.lasts_at_most))
        };
        lines.push(format!(
            "  {:<width$}  {:<7}  ends {ends}",
            label(alert),
            alert.state
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> Value {
        json!({"status": "success", "data": {"groups": [
            {"name": "slo", "rules": [
                {"type": "recording", "name": "slo:sli_error:ratio_rate5m",
                 "query": "sum(rate(x_count{code=~\"5..\"}[5m])) / sum(rate(x_count[5m]))"},
                {"type": "recording", "name": "slo:sli_error:ratio_rate1h",
                 "query": "sum(rate(x_count{code=~\"5..\"}[1h])) / sum(rate(x_count[1h]))"},
                {"type": "recording", "name": "slo:error_budget:ratio", "query": "vector(0.001)"},
                {"type": "alerting", "name": "SLOErrorBudgetBurnFast",
                 "query": "(slo:sli_error:ratio_rate1h > on (slo) (14.4 * slo:error_budget:ratio) and on (slo) slo:sli_error:ratio_rate5m > on (slo) (14.4 * slo:error_budget:ratio))",
                 "duration": 0, "keepFiringFor": 0,
                 "alerts": [{"labels": {"alertname": "SLOErrorBudgetBurnFast", "slo": "b-availability"}, "state": "firing"}]}
            ]},
            {"name": "causes", "rules": [
                {"type": "alerting", "name": "ServiceTargetDown", "query": "up == 0",
                 "duration": 60, "alerts": [{"labels": {}, "state": "pending"}]},
                {"type": "alerting", "name": "LoginThrottlingInBulk",
                 "query": "sum by (job, instance) (rate(token_requests_total{outcome=\"throttled\"}[5m])) > 1",
                 "duration": 600, "keepFiringFor": 30, "alerts": [{"labels": {}, "state": "firing"}]},
                {"type": "alerting", "name": "LogLinesDropped",
                 "query": "rate(log_lines_dropped_total[5m]) > 0", "alerts": []}
            ]}
        ]}})
    }

    #[test]
    fn each_active_alert_lasts_at_most_its_longest_window() {
        let found = active(&rules());
        let summary: Vec<(&str, Option<&str>, &str, u64)> = found
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.slo.as_deref(),
                    a.state.as_str(),
                    a.lasts_at_most.as_secs(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("LoginThrottlingInBulk", None, "firing", 330),
                (
                    "SLOErrorBudgetBurnFast",
                    Some("b-availability"),
                    "firing",
                    3600
                ),
                ("ServiceTargetDown", None, "pending", 0),
            ]
        );
        let lines = describe(&found);
        assert_eq!(lines.len(), 4);
        assert!(
            lines[1].ends_with("firing   ends within 5m 30s"),
            "{lines:?}"
        );
        assert!(
            lines[3].ends_with("ends as soon as its cause is gone"),
            "{lines:?}"
        );
        assert!(describe(&[]).is_empty());
    }

    #[test]
    fn prometheus_durations_and_ranges_are_read() {
        assert_eq!(duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(duration("5x"), None);
        assert_eq!(duration(""), None);
        assert_eq!(
            windows("max_over_time(rate(a[5m])[1h:1m]) + b{le=\"[x]\"}"),
            [Duration::from_secs(300), Duration::from_secs(3600)]
        );
    }
}
