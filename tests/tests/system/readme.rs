//! The README's walkthrough, and every other section of README.md and docs/*.md that shows
//! what the services print, replayed: every console block (the curl command, the status
//! line, every header shown, the body) and every log sample (its fields in order, and their
//! values other than times and ids) is checked against the real binaries, in the page's
//! order. When a page and the services disagree, this test fails and says where (file and
//! line).
//!
//! Which sections are replayed: a section (a heading, and everything up to the next heading
//! of its level or above) that contains the comment `<!-- replay: this section -->`. Each
//! one is replayed on a fresh A and B, from the top. A console block that calls either
//! service (`$ curl` to 127.0.0.1:8080 or :8081) outside such a section fails the test, so
//! no output shown to a reader can escape the replay by moving to another page.
//!
//! What a page may leave to chance, and how it is checked instead:
//! - times (`ts`, `latency_ms`, the `date` header, which the pages leave out): their type;
//! - generated ids (UUIDs, trace and span ids, `traceresponse`): their shape, and that each
//!   id in a section stands for one real id throughout (two lines sharing a `trace_id` in
//!   the page share one in reality).
//!
//! Steps the reader performs by hand are `<!-- replay: stop A -->` and
//! `<!-- replay: start A -->` comments, invisible on the rendered page.

mod compare;
mod page;

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::Value;
use system_tests::{Kind, Service, client, eventually, vacant_addr};

use compare::{Ids, compare_log_line, compare_traceparent, generated_id};
use page::{At, REPLAY_SECTION, Step, parse_curl, replayed_sections, steps};
pub(crate) use page::{heading_level, in_code, pages};

/// The services under the replay; A can be stopped and started again on its address.
struct Stack {
    a: Option<Service>,
    a_addr: SocketAddr,
    b: Service,
}

impl Stack {
    fn start() -> Self {
        let a_addr = vacant_addr();
        let a = Service::start(Kind::A, &a_addr.to_string(), &[], &[]);
        let b = Service::b(&a.url(), &[]);
        Self {
            a: Some(a),
            a_addr,
            b,
        }
    }

    /// The page's URL, pointed at this stack.
    fn url(&self, shown: &str, at: &At) -> String {
        if let Some(path) = shown.strip_prefix("http://127.0.0.1:8080") {
            format!("http://{}{path}", self.a_addr)
        } else if let Some(path) = shown.strip_prefix("http://127.0.0.1:8081") {
            format!("{}{path}", self.b.url())
        } else {
            panic!("{at}: a replayed curl calls 127.0.0.1:8080 or :8081, not {shown}")
        }
    }

    fn logs_of(&self, service: &str) -> &system_tests::Logs {
        match service {
            "service-a" => &self.a.as_ref().expect("A is running").logs,
            "service-b" => &self.b.logs,
            other => panic!("no service {other:?}"),
        }
    }
}

/// Every console block that calls a service, on every page, is in a replayed section.
#[test]
fn every_curl_shown_is_replayed() {
    for (file, text) in pages() {
        let lines: Vec<&str> = text.lines().collect();
        let code = in_code(&lines);
        let sections = replayed_sections(&file, &text);
        for (i, line) in lines.iter().enumerate() {
            let opens = line.trim_start() == "```console" && (i == 0 || !code[i - 1]);
            let calls = lines.get(i + 1).is_some_and(|next| {
                next.trim_start().starts_with("$ curl")
                    && ["127.0.0.1:808", "localhost:808"]
                        .iter()
                        .any(|host| next.contains(host))
            });
            if opens && calls {
                assert!(
                    sections.iter().any(|s| s.lines.contains(&i)),
                    "{file}:{}: this curl's output is shown, but its section is not replayed \
                     (mark it `{REPLAY_SECTION}`)",
                    i + 1
                );
            }
        }
    }
}

/// Every replayed section of every page, each on a fresh A and B, in page order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replayed_section_is_what_the_services_do() {
    let mut replayed = Vec::new();
    for (file, text) in pages() {
        for section in replayed_sections(&file, &text) {
            let steps = steps(&text, &section);
            replayed.push((section, steps));
        }
    }
    // The README's walkthrough is among them, whole.
    let (_, walkthrough) = replayed
        .iter()
        .find(|(s, _)| s.at.file == "README.md" && s.title.starts_with("## The walkthrough"))
        .expect("README.md: the walkthrough is a replayed section");
    let consoles = walkthrough
        .iter()
        .filter(|s| matches!(s, Step::Console { .. }))
        .count();
    assert!(
        consoles >= 12,
        "the walkthrough's console blocks: {consoles}"
    );
    for (section, steps) in &replayed {
        eprintln!("replaying {} {}", section.at, section.title);
        replay(steps).await;
    }
}

/// The steps of one section, on a fresh A and B.
async fn replay(steps: &[Step]) {
    let mut stack = Stack::start();
    let mut ids = Ids::default();
    // The request id of the last console block's request, and how many lines each service
    // had printed before it: the log lines after a console block are that request's.
    let mut last_request_id = String::new();
    let mut printed_before: HashMap<String, usize> = HashMap::new();

    for step in steps {
        match step {
            Step::Action { at, what } => match what.as_str() {
                "stop A" => {
                    stack.a.take().expect("A is running").stop();
                }
                "start A" => {
                    assert!(stack.a.is_none(), "{at}: A is already running");
                    stack.a = Some(Service::start(Kind::A, &stack.a_addr.to_string(), &[], &[]));
                }
                other => panic!("{at}: unknown replay action {other:?}"),
            },
            Step::Console {
                at,
                command,
                output,
            } => {
                printed_before.clear();
                if let Some(a) = &stack.a {
                    printed_before.insert("service-a".into(), a.logs.raw().len());
                }
                printed_before.insert("service-b".into(), stack.b.logs.raw().len());
                last_request_id = replay_console(&stack, &mut ids, at, command, output).await;
            }
            Step::Logs { at, lines } => {
                for (n, shown) in lines.iter().enumerate() {
                    let at = at.plus(1 + n);
                    let shown_value: Value = serde_json::from_str(shown)
                        .unwrap_or_else(|e| panic!("{at}: not JSON: {e}"));
                    let service = shown_value["service"].as_str().expect("service");
                    let logs = stack.logs_of(service);
                    let real = lines_of_request(
                        logs,
                        printed_before.get(service).copied().unwrap_or(0),
                        &last_request_id,
                    );
                    // The page shows a service's lines of that request in order.
                    let index = lines[..n]
                        .iter()
                        .filter(|l| l.contains(&format!(r#""service":"{service}""#)))
                        .count();
                    let real_line = real.get(index).unwrap_or_else(|| {
                        panic!("{at}: {service} printed no such line; it printed {real:#?}")
                    });
                    compare_log_line(shown, real_line, &mut ids, &at);
                }
            }
        }
    }
}

/// The lines `logs` printed for `request_id` after its first `skip` lines, once the
/// request's own line (always its last) is among them (bounded wait).
fn lines_of_request(logs: &system_tests::Logs, skip: usize, request_id: &str) -> Vec<String> {
    eventually(format!("the request line of {request_id}")).until(|| {
        let lines: Vec<String> = logs
            .raw()
            .into_iter()
            .skip(skip)
            .filter(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| v["request_id"] == request_id)
            })
            .collect();
        if lines.iter().any(|l| l.contains(r#""endpoint":"#)) {
            Ok(lines)
        } else {
            Err(lines)
        }
    })
}

/// Sends one curl shown on a page and compares what it printed; returns the request's id.
async fn replay_console(
    stack: &Stack,
    ids: &mut Ids,
    at: &At,
    command: &str,
    output: &[String],
) -> String {
    let curl = parse_curl(command, at);
    let method = reqwest::Method::from_bytes(curl.method.as_bytes()).expect("method");
    let mut request = client().request(method, stack.url(&curl.url, at));
    for (name, value) in &curl.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &curl.body {
        request = request.body(body.clone());
    }
    let reply = request.send().await.expect("request sent");
    let status = reply.status();
    let headers = reply.headers().clone();
    let body = reply.text().await.expect("body");
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();

    if let Some(word) = &curl.grep {
        // What curl printed, as it printed it, then only the lines grep keeps.
        let mut printed = Vec::new();
        if curl.include {
            printed.push(format!(
                "HTTP/1.1 {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            ));
            for (name, value) in &headers {
                printed.push(format!("{name}: {}", value.to_str().unwrap_or_default()));
            }
            printed.push(String::new());
        }
        printed.extend(body.lines().map(str::to_owned));
        let word = word.to_lowercase();
        let kept: Vec<&String> = printed
            .iter()
            .filter(|line| line.to_lowercase().contains(&word))
            .collect();
        assert_eq!(
            output.len(),
            kept.len(),
            "{at}: grep keeps {kept:?}, the page shows {output:?}"
        );
        for (shown, real) in output.iter().zip(kept) {
            match (shown.split_once(": "), real.split_once(": ")) {
                (Some(("traceresponse", shown)), Some(("traceresponse", real))) => {
                    compare_traceparent(shown, real, ids, at);
                }
                (Some((name, shown)), Some((real_name, real))) if generated_id(shown) => {
                    assert_eq!(name, real_name, "{at}");
                    assert!(generated_id(real), "{at}: {name}: {real}");
                    ids.bind(shown, real, at);
                }
                _ => assert_eq!(&ids.apply(shown), real, "{at}"),
            }
        }
        return request_id;
    }

    let mut shown = output.iter();
    if curl.include {
        let status_line = shown.next().map(String::as_str).unwrap_or_default();
        assert_eq!(
            status_line,
            format!(
                "HTTP/1.1 {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            ),
            "{at}: status line"
        );
        let mut shown_names = Vec::new();
        for line in shown.by_ref() {
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("{at}: header line {line:?}"));
            shown_names.push(name.to_owned());
            let real = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{at}: the service sent no {name} header"));
            if name == "traceresponse" {
                compare_traceparent(value, real, ids, at);
            } else if generated_id(value) {
                assert!(generated_id(real), "{at}: {name}: {real}");
                ids.bind(value, real, at);
            } else {
                assert_eq!(value, real, "{at}: header {name}");
            }
        }
        // Every header the service sent is shown, in its order; `date` is left out.
        let sent: Vec<String> = headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k != "date")
            .collect();
        assert_eq!(
            shown_names, sent,
            "{at}: the headers shown are all that is sent"
        );
    }
    let shown_body: Vec<&str> = shown.map(String::as_str).collect();
    if curl.json_tool {
        let shown: Value = serde_json::from_str(&shown_body.join("\n"))
            .unwrap_or_else(|e| panic!("{at}: body is not JSON: {e}"));
        let real: Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(shown, real, "{at}: the numbers shown are the real ones");
    } else {
        assert_eq!(
            ids.apply(&shown_body.join("\n")),
            body.trim_end(),
            "{at}: body"
        );
    }
    request_id
}
