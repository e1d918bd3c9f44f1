//! docs/metrics.md against what the services export: every series its table names is on
//! the `/metrics` of the service the row is for, every label whose values the row lists
//! has exactly those values there, and the bucket boundaries B adds are the ones the page
//! gives.

use std::collections::{BTreeMap, BTreeSet};

use system_tests::{Service, get, metrics_with, repo_root};

/// Label values by label name, of the samples of series `name` (its `_total`, `_bucket`,
/// `_sum` and `_count` samples included) in the text format; `None` when it has none.
fn labels_of(exposition: &str, name: &str) -> Option<BTreeMap<String, BTreeSet<String>>> {
    let mut labels: Option<BTreeMap<String, BTreeSet<String>>> = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (series, rest) = line.split_once('{').unwrap_or_else(|| {
            let (series, _) = line.split_once(' ').unwrap_or((line, ""));
            (series, "")
        });
        let suffix = series.strip_prefix(name);
        if !matches!(suffix, Some("" | "_total" | "_bucket" | "_sum" | "_count")) {
            continue;
        }
        let found = labels.get_or_insert_with(BTreeMap::new);
        let pairs = rest.split_once('}').map_or("", |(pairs, _)| pairs);
        for pair in pairs.split("\",").filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
            found
                .entry(key.to_owned())
                .or_default()
                .insert(value.trim_end_matches('"').to_owned());
        }
    }
    labels
}

/// The words between backticks in `text`.
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[tokio::test]
async fn every_series_and_label_value_the_page_lists_is_exported() {
    let page =
        std::fs::read_to_string(repo_root().join("docs/metrics.md")).expect("docs/metrics.md");
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    // One request each, so that the per-route series exist.
    for service in [&a, &b] {
        assert_eq!(get(&service.at("/health")).await.status, 200);
    }
    let accept = Some("text/plain;version=0.0.4");
    let exposition = [
        ("A", metrics_with(&a, "", accept).await.text),
        ("B", metrics_with(&b, "", accept).await.text),
    ];

    let mut rows = 0;
    for line in page.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        let (series, labels) = (cells[0], cells.get(1).copied().unwrap_or(""));
        let services: &[&str] = if series.contains("(A)") {
            &["A"]
        } else if series.contains("(B)") {
            &["B"]
        } else {
            &["A", "B"]
        };
        // "`label`: `value`, `value` (…)": the row lists every value of that label.
        let listed = labels.strip_prefix('`').and_then(|rest| {
            let (label, values) = rest.split_once("`: ")?;
            Some((label, quoted(values).into_iter().collect::<BTreeSet<_>>()))
        });
        let names = quoted(series)
            .into_iter()
            .filter(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        for name in names {
            rows += 1;
            for (service, text) in exposition.iter().filter(|(s, _)| services.contains(s)) {
                let found = labels_of(text, name).unwrap_or_else(|| {
                    panic!("docs/metrics.md lists {name}; {service} has no such series")
                });
                let Some((label, values)) = &listed else {
                    continue;
                };
                let exported: BTreeSet<&str> = found
                    .get(*label)
                    .map(|v| v.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                assert_eq!(
                    &exported, values,
                    "{service}'s {name}{{{label}}}: exported (left), listed in docs/metrics.md (right)"
                );
            }
        }
    }
    assert!(rows > 20, "the page's series rows: {rows}");

    // "B adds a boundary … with the defaults, 1.05 s (…) and 2.05 s and 2.153 s".
    let added = page
        .split_once("with the defaults, ")
        .map(|(_, rest)| rest.split_once("(the deadline)").expect("B's boundaries").0)
        .expect("docs/metrics.md gives B's own boundaries");
    let boundaries: Vec<&str> = added
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.contains('.') && w.len() > 1)
        .collect();
    assert_eq!(boundaries.len(), 3, "{added}");
    for boundary in boundaries {
        let le = format!("le=\"{boundary}\"");
        let on = |text: &str, series: &str| {
            text.lines()
                .any(|l| l.starts_with(&format!("{series}_bucket{{")) && l.contains(&le))
        };
        assert!(
            on(&exposition[1].1, "http_client_request_duration_seconds"),
            "B has no {le}"
        );
        assert!(
            !on(&exposition[0].1, "http_server_request_duration_seconds"),
            "A has {le}"
        );
    }
}
