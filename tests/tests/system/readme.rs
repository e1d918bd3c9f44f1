//! The README's walkthrough, replayed: every console block (the curl command, the status
//! line, every header shown, the body) and every log sample (its fields in order, and their
//! values other than times and ids) is checked against the real binaries, in the README's
//! order. When the README and the services disagree, this test fails and says where.
//!
//! What the README may leave to chance, and how it is checked instead:
//! - times (`ts`, `latency_ms`, the `date` header, which the README leaves out): their type;
//! - generated ids (UUIDs, trace and span ids, `traceresponse`): their shape, and that each
//!   id in the README stands for one real id throughout (two lines sharing a `trace_id` in
//!   the README share one in reality).
//!
//! Steps the reader performs by hand are `<!-- replay: stop A -->` and
//! `<!-- replay: start A -->` comments, invisible on the rendered page.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::Value;
use system_tests::{Kind, Service, client, repo_root, vacant_addr};

/// One piece of the walkthrough, in order.
#[derive(Debug)]
enum Step {
    /// A ```console block: the command and what it printed.
    Console {
        at: usize,
        command: String,
        output: Vec<String>,
    },
    /// A ```json block: log lines of the request before it.
    Logs { at: usize, lines: Vec<String> },
    /// A `<!-- replay: … -->` comment.
    Action { at: usize, what: String },
}

/// The walkthrough section of the README, as steps. `at` is a line number in README.md.
fn walkthrough() -> Vec<Step> {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("## The walkthrough"))
        .expect("a walkthrough section");
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |n| start + 1 + n);
    let mut steps = Vec::new();
    let mut i = start;
    while i < end {
        let line = lines[i];
        if let Some(what) = line
            .trim()
            .strip_prefix("<!-- replay:")
            .and_then(|rest| rest.strip_suffix("-->"))
        {
            steps.push(Step::Action {
                at: i + 1,
                what: what.trim().to_owned(),
            });
        }
        if line == "```console" || line == "```json" {
            let at = i + 1;
            let body_start = i + 1;
            let close = lines[body_start..]
                .iter()
                .position(|l| *l == "```")
                .map(|n| body_start + n)
                .unwrap_or_else(|| panic!("README.md:{at}: unclosed code block"));
            let body: Vec<String> = lines[body_start..close]
                .iter()
                .map(|l| (*l).to_owned())
                .collect();
            if line == "```json" {
                steps.push(Step::Logs { at, lines: body });
            } else {
                let (command, output) = split_command(&body, at);
                steps.push(Step::Console {
                    at,
                    command,
                    output,
                });
            }
            i = close;
        }
        i += 1;
    }
    steps
}

/// `$ curl … \` continuation lines, then the output.
fn split_command(block: &[String], at: usize) -> (String, Vec<String>) {
    let first = block
        .first()
        .and_then(|l| l.strip_prefix("$ "))
        .unwrap_or_else(|| panic!("README.md:{at}: a console block starts with `$ `"));
    let mut command = String::new();
    let mut rest = block.iter().skip(1);
    let mut current = first.to_owned();
    while let Some(stripped) = current.strip_suffix('\\') {
        command.push_str(stripped);
        current = rest
            .next()
            .unwrap_or_else(|| panic!("README.md:{at}: dangling `\\`"))
            .trim_start()
            .to_owned();
    }
    command.push_str(&current);
    (command, rest.cloned().collect())
}

/// Shell words of `command`, with '…' and "…" quoting (all the README uses).
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// What a README curl asks.
#[derive(Debug, Default)]
struct Curl {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    /// `-i`: the status line and headers are shown.
    include: bool,
    /// `| python3 -m json.tool`: the body is shown pretty-printed.
    json_tool: bool,
}

fn parse_curl(command: &str, at: usize) -> Curl {
    let (curl, pipe) = command.split_once('|').unwrap_or((command, ""));
    assert!(
        pipe.is_empty() || pipe.trim() == "python3 -m json.tool",
        "README.md:{at}: unknown pipe {pipe:?}"
    );
    let mut parsed = Curl {
        method: "GET".into(),
        json_tool: !pipe.is_empty(),
        ..Curl::default()
    };
    let words = words(curl);
    assert_eq!(
        words.first().map(String::as_str),
        Some("curl"),
        "README.md:{at}"
    );
    let mut args = words.iter().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("README.md:{at}: {arg} needs a value"))
                .clone()
        };
        match arg.as_str() {
            "-i" => parsed.include = true,
            "-s" => {}
            "-X" => parsed.method = value(),
            "-H" => {
                let header = value();
                let (name, value) = header
                    .split_once(':')
                    .unwrap_or_else(|| panic!("README.md:{at}: header {header:?}"));
                parsed
                    .headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "-d" => {
                parsed.body = Some(value());
                if parsed.method == "GET" {
                    parsed.method = "POST".into();
                }
            }
            url if url.starts_with("http://") => parsed.url = url.to_owned(),
            other => panic!("README.md:{at}: the replay does not know curl's {other}"),
        }
    }
    parsed
}

/// README ids → real ids, consistent both ways.
#[derive(Debug, Default)]
struct Ids(HashMap<String, String>);

impl Ids {
    /// Records that README's `shown` is the real `real`; panics on a contradiction.
    fn bind(&mut self, shown: &str, real: &str, at: usize) {
        if let Some(before) = self.0.get(shown) {
            assert_eq!(
                before, real,
                "README.md:{at}: {shown} stands for two real ids"
            );
        } else {
            assert!(
                !self.0.values().any(|v| v == real),
                "README.md:{at}: the real id {real} is shown as two ids"
            );
            self.0.insert(shown.to_owned(), real.to_owned());
        }
    }

    /// `text` with every README id replaced by its real one.
    fn apply(&self, text: &str) -> String {
        self.0.iter().fold(text.to_owned(), |text, (shown, real)| {
            text.replace(shown, real)
        })
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Whether `text` is an id the README may show as any other of its kind.
fn generated_id(text: &str) -> bool {
    system_tests::is_uuid_v4(text) || is_hex(text, 32) || is_hex(text, 16)
}

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

    /// The README's URL, pointed at this stack.
    fn url(&self, shown: &str, at: usize) -> String {
        if let Some(path) = shown.strip_prefix("http://127.0.0.1:8080") {
            format!("http://{}{path}", self.a_addr)
        } else if let Some(path) = shown.strip_prefix("http://127.0.0.1:8081") {
            format!("{}{path}", self.b.url())
        } else {
            panic!("README.md:{at}: the walkthrough calls 127.0.0.1:8080 or :8081, not {shown}")
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

/// The keys of a JSON object line, in the order printed.
fn keys_in_order(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(
            mut self,
            mut map: M,
        ) -> Result<Self::Value, M::Error> {
            while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                self.0.push(key);
            }
            Ok(self.0)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    serde::Deserializer::deserialize_map(&mut de, Keys(Vec::new())).expect("a JSON object")
}

/// One README log line against the real one: the same keys in the same order, the same
/// values except times (their type) and ids (their shape, bound in `ids`).
fn compare_log_line(shown: &str, real: &str, ids: &mut Ids, at: usize) {
    assert_eq!(
        keys_in_order(shown),
        keys_in_order(real),
        "README.md:{at}: fields of\n  README: {shown}\n  real:   {real}"
    );
    let shown_value: Value = serde_json::from_str(shown).expect("README log line is JSON");
    let real_value: Value = serde_json::from_str(real).expect("log line is JSON");
    for (key, shown_field) in shown_value.as_object().expect("object") {
        let real_field = &real_value[key];
        match key.as_str() {
            "ts" => assert!(
                real_field
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
                "README.md:{at}: ts {real_field}"
            ),
            "latency_ms" => assert!(real_field.is_number(), "README.md:{at}: latency_ms"),
            _ if shown_field.as_str().is_some_and(generated_id) => {
                let real_id = real_field.as_str().unwrap_or_default();
                assert!(
                    generated_id(real_id),
                    "README.md:{at}: {key} is an id, real {real_field}"
                );
                ids.bind(shown_field.as_str().unwrap_or_default(), real_id, at);
            }
            _ => {
                let shown_field =
                    serde_json::from_str::<Value>(&ids.apply(&shown_field.to_string()))
                        .expect("JSON");
                assert_eq!(
                    &shown_field, real_field,
                    "README.md:{at}: {key} in\n  README: {shown}\n  real:   {real}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_is_what_the_services_do() {
    let steps = walkthrough();
    let consoles = steps
        .iter()
        .filter(|s| matches!(s, Step::Console { .. }))
        .count();
    assert!(
        consoles >= 12,
        "the walkthrough's console blocks: {consoles}"
    );
    let mut stack = Stack::start();
    let mut ids = Ids::default();
    // The request id of the last console block's request, and how many lines each service
    // had printed before it: the log lines after a console block are that request's.
    let mut last_request_id = String::new();
    let mut printed_before: HashMap<String, usize> = HashMap::new();

    for step in &steps {
        match step {
            Step::Action { at, what } => match what.as_str() {
                "stop A" => {
                    stack.a.take().expect("A is running").stop();
                }
                "start A" => {
                    assert!(stack.a.is_none(), "README.md:{at}: A is already running");
                    stack.a = Some(Service::start(Kind::A, &stack.a_addr.to_string(), &[], &[]));
                }
                other => panic!("README.md:{at}: unknown replay action {other:?}"),
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
                last_request_id = replay_console(&stack, &mut ids, *at, command, output).await;
            }
            Step::Logs { at, lines } => {
                for (n, shown) in lines.iter().enumerate() {
                    let at = at + 1 + n;
                    let shown_value: Value = serde_json::from_str(shown)
                        .unwrap_or_else(|e| panic!("README.md:{at}: not JSON: {e}"));
                    let service = shown_value["service"].as_str().expect("service");
                    let logs = stack.logs_of(service);
                    let real = lines_of_request(
                        logs,
                        printed_before.get(service).copied().unwrap_or(0),
                        &last_request_id,
                    );
                    // The README shows a service's lines of that request in order.
                    let index = lines[..n]
                        .iter()
                        .filter(|l| l.contains(&format!(r#""service":"{service}""#)))
                        .count();
                    let real_line = real.get(index).unwrap_or_else(|| {
                        panic!(
                            "README.md:{at}: {service} printed no such line; it printed {real:#?}"
                        )
                    });
                    compare_log_line(shown, real_line, &mut ids, at);
                }
            }
        }
    }
}

/// The lines `logs` printed for `request_id` after its first `skip` lines, once the
/// request's own line (always its last) is among them (bounded wait).
fn lines_of_request(logs: &system_tests::Logs, skip: usize, request_id: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + system_tests::TIMEOUT;
    loop {
        let lines: Vec<String> = logs
            .raw()
            .into_iter()
            .skip(skip)
            .filter(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| v["request_id"] == request_id)
            })
            .collect();
        if lines.iter().any(|l| l.contains(r#""endpoint":"#)) {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request line for {request_id}: {lines:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Sends one README curl and compares what it printed; returns the request's id.
async fn replay_console(
    stack: &Stack,
    ids: &mut Ids,
    at: usize,
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
            "README.md:{at}: status line"
        );
        let mut shown_names = Vec::new();
        for line in shown.by_ref() {
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("README.md:{at}: header line {line:?}"));
            shown_names.push(name.to_owned());
            let real = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("README.md:{at}: the service sent no {name} header"));
            if name == "traceresponse" {
                compare_traceparent(value, real, ids, at);
            } else if generated_id(value) {
                assert!(generated_id(real), "README.md:{at}: {name}: {real}");
                ids.bind(value, real, at);
            } else {
                assert_eq!(value, real, "README.md:{at}: header {name}");
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
            "README.md:{at}: the headers shown are all that is sent"
        );
    }
    let shown_body: Vec<&str> = shown.map(String::as_str).collect();
    if curl.json_tool {
        let shown: Value = serde_json::from_str(&shown_body.join("\n"))
            .unwrap_or_else(|e| panic!("README.md:{at}: body is not JSON: {e}"));
        let real: Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(
            shown, real,
            "README.md:{at}: the numbers shown are the real ones"
        );
    } else {
        assert_eq!(
            ids.apply(&shown_body.join("\n")),
            body.trim_end(),
            "README.md:{at}: body"
        );
    }
    request_id
}

/// A `traceresponse` (or `traceparent`) value: version and flags as shown, ids bound.
fn compare_traceparent(shown: &str, real: &str, ids: &mut Ids, at: usize) {
    let shown_parts: Vec<&str> = shown.split('-').collect();
    let real_parts: Vec<&str> = real.split('-').collect();
    assert!(
        shown_parts.len() == 4 && real_parts.len() == 4,
        "README.md:{at}: {shown} / {real}"
    );
    assert_eq!(shown_parts[0], real_parts[0], "README.md:{at}: version");
    assert_eq!(
        shown_parts[3], real_parts[3],
        "README.md:{at}: trace flags of {real}"
    );
    ids.bind(shown_parts[1], real_parts[1], at);
    ids.bind(shown_parts[2], real_parts[2], at);
}
