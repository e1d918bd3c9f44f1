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

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use serde_json::Value;
use system_tests::{Kind, Service, client, eventually, repo_root, vacant_addr};

/// The comment that marks a section as replayed.
const REPLAY_SECTION: &str = "<!-- replay: this section -->";

/// A place in a page: its path from the repository's root, and a line number.
#[derive(Debug, Clone)]
struct At {
    file: String,
    line: usize,
}

impl At {
    fn plus(&self, n: usize) -> Self {
        Self {
            file: self.file.clone(),
            line: self.line + n,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The pages: README.md, then every docs/*.md in name order, as (path, text).
pub(crate) fn pages() -> Vec<(String, String)> {
    let root = repo_root();
    let mut names: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    names.sort();
    names.insert(0, "README.md".to_owned());
    names
        .into_iter()
        .map(|name| {
            let text =
                std::fs::read_to_string(root.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .collect()
}

/// Whether each line of `lines` is inside a fenced code block (the fences included).
pub(crate) fn in_code(lines: &[&str]) -> Vec<bool> {
    let mut fence: Option<String> = None;
    lines
        .iter()
        .map(|line| {
            let trimmed = line.trim_start();
            match &fence {
                Some(open) => {
                    if trimmed.starts_with(open.as_str()) && trimmed.trim_end() == open {
                        fence = None;
                    }
                    true
                }
                None if trimmed.starts_with("```") => {
                    let ticks = trimmed.chars().take_while(|c| *c == '`').count();
                    fence = Some("`".repeat(ticks));
                    true
                }
                None => false,
            }
        })
        .collect()
}

/// The level of a Markdown heading (`## …` is 2), if `line` is one.
pub(crate) fn heading_level(line: &str) -> Option<usize> {
    let level = line.chars().take_while(|c| *c == '#').count();
    ((1..=6).contains(&level) && line[level..].starts_with(' ')).then_some(level)
}

/// One replayed section: where its heading is, and its lines (0-based, end excluded).
#[derive(Debug)]
struct Section {
    at: At,
    title: String,
    lines: std::ops::Range<usize>,
}

/// The replayed sections of one page.
fn replayed_sections(file: &str, text: &str) -> Vec<Section> {
    let lines: Vec<&str> = text.lines().collect();
    let code = in_code(&lines);
    let headings: Vec<(usize, usize)> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| !code[*i])
        .filter_map(|(i, l)| heading_level(l).map(|level| (i, level)))
        .collect();
    let mut sections: Vec<Section> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if code[i] || line.trim() != REPLAY_SECTION {
            continue;
        }
        let at = At {
            file: file.to_owned(),
            line: i + 1,
        };
        let &(start, level) = headings
            .iter()
            .rev()
            .find(|(h, _)| *h < i)
            .unwrap_or_else(|| panic!("{at}: a replay mark before any heading"));
        let end = headings
            .iter()
            .find(|(h, l)| *h > start && *l <= level)
            .map_or(lines.len(), |(h, _)| *h);
        assert!(
            sections.iter().all(|s| s.lines.start != start),
            "{at}: the section is already marked"
        );
        sections.push(Section {
            at: At {
                file: file.to_owned(),
                line: start + 1,
            },
            title: lines[start].to_owned(),
            lines: start..end,
        });
    }
    for pair in sections.windows(2) {
        assert!(
            pair[1].lines.start >= pair[0].lines.end,
            "{}: a replayed section inside a replayed section ({})",
            pair[1].at,
            pair[0].at
        );
    }
    sections
}

/// One piece of a replayed section, in order.
#[derive(Debug)]
enum Step {
    /// A ```console block: the command and what it printed.
    Console {
        at: At,
        command: String,
        output: Vec<String>,
    },
    /// A ```json block: log lines of the request before it.
    Logs { at: At, lines: Vec<String> },
    /// A `<!-- replay: … -->` comment.
    Action { at: At, what: String },
}

/// The steps of `section` in `text`.
fn steps(text: &str, section: &Section) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let place = |i: usize| At {
        file: section.at.file.clone(),
        line: i + 1,
    };
    let mut steps = Vec::new();
    let mut i = section.lines.start;
    while i < section.lines.end {
        let line = lines[i];
        if line.trim() != REPLAY_SECTION
            && let Some(what) = line
                .trim()
                .strip_prefix("<!-- replay:")
                .and_then(|rest| rest.strip_suffix("-->"))
        {
            steps.push(Step::Action {
                at: place(i),
                what: what.trim().to_owned(),
            });
        }
        if line == "```console" || line == "```json" {
            let at = place(i);
            let body_start = i + 1;
            let close = lines[body_start..]
                .iter()
                .position(|l| *l == "```")
                .map(|n| body_start + n)
                .unwrap_or_else(|| panic!("{at}: unclosed code block"));
            let body: Vec<String> = lines[body_start..close]
                .iter()
                .map(|l| (*l).to_owned())
                .collect();
            if line == "```json" {
                steps.push(Step::Logs { at, lines: body });
            } else {
                let (command, output) = split_command(&body, &at);
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
fn split_command(block: &[String], at: &At) -> (String, Vec<String>) {
    let first = block
        .first()
        .and_then(|l| l.strip_prefix("$ "))
        .unwrap_or_else(|| panic!("{at}: a console block starts with `$ `"));
    let mut command = String::new();
    let mut rest = block.iter().skip(1);
    let mut current = first.to_owned();
    while let Some(stripped) = current.strip_suffix('\\') {
        command.push_str(stripped);
        current = rest
            .next()
            .unwrap_or_else(|| panic!("{at}: dangling `\\`"))
            .trim_start()
            .to_owned();
    }
    command.push_str(&current);
    (command, rest.cloned().collect())
}

/// Shell words of `command`, with '…' and "…" quoting (all the pages use).
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

/// What a page's curl asks.
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
    /// `| grep -i <word>`: only the lines with `word` in them (any case) are shown.
    grep: Option<String>,
}

fn parse_curl(command: &str, at: &At) -> Curl {
    let (curl, pipe) = command.split_once('|').unwrap_or((command, ""));
    let pipe = words(pipe);
    let mut parsed = Curl {
        method: "GET".into(),
        ..Curl::default()
    };
    match pipe.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => {}
        ["python3", "-m", "json.tool"] => parsed.json_tool = true,
        ["grep", "-i", word] => parsed.grep = Some(word.to_owned()),
        _ => panic!("{at}: unknown pipe {pipe:?}"),
    }
    let words = words(curl);
    assert_eq!(words.first().map(String::as_str), Some("curl"), "{at}");
    let mut args = words.iter().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{at}: {arg} needs a value"))
                .clone()
        };
        match arg.as_str() {
            "-X" => parsed.method = value(),
            "-H" => {
                let header = value();
                let (name, value) = header
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{at}: header {header:?}"));
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
            // `-i`, `-s`, or both as `-si`.
            flags
                if flags.len() > 1
                    && flags.starts_with('-')
                    && flags[1..].chars().all(|c| c == 'i' || c == 's') =>
            {
                parsed.include |= flags.contains('i');
            }
            other => panic!("{at}: the replay does not know curl's {other}"),
        }
    }
    parsed
}

/// Ids shown on a page → real ids, consistent both ways.
#[derive(Debug, Default)]
struct Ids(HashMap<String, String>);

impl Ids {
    /// Records that the page's `shown` is the real `real`; panics on a contradiction.
    fn bind(&mut self, shown: &str, real: &str, at: &At) {
        if let Some(before) = self.0.get(shown) {
            assert_eq!(before, real, "{at}: {shown} stands for two real ids");
        } else {
            assert!(
                !self.0.values().any(|v| v == real),
                "{at}: the real id {real} is shown as two ids"
            );
            self.0.insert(shown.to_owned(), real.to_owned());
        }
    }

    /// `text` with every id shown replaced by its real one.
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

/// Whether `text` is an id a page may show as any other of its kind.
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

/// One log line shown on a page against the real one: the same keys in the same order, the same
/// values except times (their type) and ids (their shape, bound in `ids`).
fn compare_log_line(shown: &str, real: &str, ids: &mut Ids, at: &At) {
    assert_eq!(
        keys_in_order(shown),
        keys_in_order(real),
        "{at}: fields of\n  page: {shown}\n  real:   {real}"
    );
    let shown_value: Value = serde_json::from_str(shown).expect("the log line shown is JSON");
    let real_value: Value = serde_json::from_str(real).expect("log line is JSON");
    for (key, shown_field) in shown_value.as_object().expect("object") {
        let real_field = &real_value[key];
        match key.as_str() {
            "ts" => assert!(
                real_field
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
                "{at}: ts {real_field}"
            ),
            "latency_ms" => assert!(real_field.is_number(), "{at}: latency_ms"),
            _ if shown_field.as_str().is_some_and(generated_id) => {
                let real_id = real_field.as_str().unwrap_or_default();
                assert!(
                    generated_id(real_id),
                    "{at}: {key} is an id, real {real_field}"
                );
                ids.bind(shown_field.as_str().unwrap_or_default(), real_id, at);
            }
            _ => {
                let shown_field =
                    serde_json::from_str::<Value>(&ids.apply(&shown_field.to_string()))
                        .expect("JSON");
                assert_eq!(
                    &shown_field, real_field,
                    "{at}: {key} in\n  page: {shown}\n  real:   {real}"
                );
            }
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

/// A `traceresponse` (or `traceparent`) value: version and flags as shown, ids bound.
fn compare_traceparent(shown: &str, real: &str, ids: &mut Ids, at: &At) {
    let shown_parts: Vec<&str> = shown.split('-').collect();
    let real_parts: Vec<&str> = real.split('-').collect();
    assert!(
        shown_parts.len() == 4 && real_parts.len() == 4,
        "{at}: {shown} / {real}"
    );
    assert_eq!(shown_parts[0], real_parts[0], "{at}: version");
    assert_eq!(shown_parts[3], real_parts[3], "{at}: trace flags of {real}");
    ids.bind(shown_parts[1], real_parts[1], at);
    ids.bind(shown_parts[2], real_parts[2], at);
}
