//! The labs for a class, sealed: nothing a student reads while diagnosing a mystery names
//! it, and its answer key needs the class secret.
//!
//! The sealing test runs all seven labs as mysteries, one after the other, on one pair of
//! services exporting spans and OTLP logs to a receiver, and for each greps every byte a
//! student can see for the lab's name, title and settings.

use std::process::{Command, Output};
use std::time::Duration;

use lab::key::Code;
use lab::results::{Event, SEALED};
use serde_json::Value;
use system_tests::labs::{Pair, SECRET, SYMPTOM_WITHIN, log_symptom, said, seed_for, state_dir};
use system_tests::otlp::OtlpReceiver;
use system_tests::{Kind, binary, client, eventually};

/// What would give `lab` away: its name and title, each setting of its faults as JSON
/// (`"slow_ms":1500`, `"slow_ms": 1500`) or as text (`slow_ms=1500`, `slow_ms: 1500`), and
/// its traffic's arguments (`--slow-ms 100`, `--slow-ms=100`, `slow=1`).
fn giveaways(lab: &lab::Scenario) -> Vec<String> {
    let mut found = vec![lab.name.to_owned(), lab.title.to_owned()];
    for fault in [lab.a_fault, lab.b_fault].into_iter().flatten() {
        let fault = fault();
        for (key, value) in fault.as_object().expect("a fault is an object") {
            if key == "scenario" {
                continue;
            }
            for form in ["\"{k}\":{v}", "\"{k}\": {v}", "{k}={v}", "{k}: {v}"] {
                found.push(form.replace("{k}", key).replace("{v}", &value.to_string()));
            }
        }
    }
    for pair in lab.traffic.chunks(2) {
        found.push(pair.join(" "));
        found.push(pair.join("="));
        if pair[1].contains('=') {
            found.push(pair[1].to_owned());
        }
    }
    found
}

/// Whether `needle` occurs in `text` as a whole token: `0.3` is not in `0.35`, `15` not in
/// `150`, `a-down` not in `data-downstream`.
fn occurs(text: &str, needle: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-';
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        let edge_before = needle.chars().next().is_none_or(|c| !word(c));
        let edge_after = needle.chars().next_back().is_none_or(|c| !word(c));
        (edge_before || before.is_none_or(|c| !word(c)))
            && (edge_after || after.is_none_or(|c| !word(c)))
    })
}

/// What a student can see, by where it comes from.
#[derive(Debug, Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, source: impl Into<String>, text: impl Into<String>) {
        self.0.push((source.into(), text.into()));
    }

    /// Panics naming each place that shows one of `lab`'s giveaways. The list of every
    /// lab's name, or every mystery's (the answers to choose from), names none of them.
    fn assert_hides(&self, lab: &lab::Scenario) {
        let mut leaks = Vec::new();
        let (every_name, every_mystery) = (lab::names(), lab::mystery_names());
        for needle in giveaways(lab) {
            for (source, text) in &self.0 {
                // The answer list names every lab a mystery can be: it gives none away.
                let text = &text
                    .replace(&every_name, "(every lab's name)")
                    .replace(&every_mystery, "(every mystery's name)");
                if occurs(text, &needle) {
                    let at = text.find(&needle).unwrap_or(0);
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(80)
                        .map_or(0, |(i, _)| i);
                    let context: String = text[from..].chars().take(200).collect();
                    leaks.push(format!("{needle:?} in {source}: …{context}…"));
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "mystery {} shows itself:\n{}",
            lab.name,
            leaks.join("\n")
        );
    }
}

/// A and B with fault endpoints, exporting spans and logs to `otlp`.
fn pair(otlp: &OtlpReceiver) -> Pair {
    Pair::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url.as_str()),
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
    ])
}

/// `lab <args>` against `pair`, with its files in `dir`.
fn lab_cmd(pair: &Pair, dir: &std::path::Path, args: &[&str]) -> Output {
    pair.lab(dir, args)
}

/// Waits (bounded) until a line of `logs` after the first `from` matches `symptom`.
fn wait_for_line_after(logs: &system_tests::Logs, from: usize, symptom: fn(&Value) -> bool) {
    eventually("the symptom in the logs")
        .within(SYMPTOM_WITHIN)
        .every(Duration::from_millis(100))
        .until(|| logs.all().iter().skip(from).any(symptom));
}

async fn text_of(url: &str, accept: Option<&str>) -> String {
    let mut request = client().get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    match request.send().await {
        Ok(reply) => reply.text().await.unwrap_or_default(),
        // A unplugged (a-down) answers nothing: nothing to see there.
        Err(e) => format!("(no answer: {e})"),
    }
}

/// Everything the services show about themselves: `/metrics` in every format, and the
/// fault endpoints.
async fn endpoints(pair: &Pair, seen: &mut Seen) {
    for service in [&pair.a, &pair.b] {
        for (format, accept) in [
            ("?format=json", None),
            ("?format=prometheus", None),
            ("?format=openmetrics", None),
            ("", Some("application/openmetrics-text; version=1.0.0")),
            ("", None),
        ] {
            let url = service.at(&format!("/metrics{format}"));
            seen.add(format!("{url} {accept:?}"), text_of(&url, accept).await);
        }
    }
    for faults in [&pair.a_faults, &pair.b_faults] {
        seen.add(faults.clone(), text_of(faults, None).await);
    }
}

/// The command line and environment of a process, as `/proc` shows them.
fn process(pid: u32) -> (String, String) {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    (
        system_tests::process::command_line(pid),
        String::from_utf8_lossy(&environ).replace('\0', "\n"),
    )
}

/// Every lab as a mystery: the symptom shows as in the named lab, both services show that a
/// sealed fault is on, and nothing a student sees names the lab or its settings; a wrong
/// answer says so without the lab's evidence, and is recorded; `lab key` names the lab that
/// ran, and `lab stop` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mystery_lab_shows_nothing_that_names_it() {
    let otlp = OtlpReceiver::start();
    let pair = pair(&otlp);
    let dir = state_dir("sealed");
    // A brute-force run throttles divya for a minute: last. A down A opens B's breaker,
    // which the next lab's traffic closes again.
    let order = [
        "a-slow",
        "a-timeouts",
        "a-flaky",
        "retry-storm",
        "b-misconfigured",
        "a-down",
        "brute-force",
    ];
    assert_eq!(order.len(), lab::SCENARIOS.len());
    for (n, name) in order.iter().enumerate() {
        let scenario = lab::scenario(name).expect("a lab");
        let seed = seed_for(name);
        let code = Code::new(SECRET, seed).to_string();
        let seed_text = seed.to_string();
        let from = (pair.a.logs.all().len(), pair.b.logs.all().len());

        // Started from the code a student gets, or from the seed and the secret.
        let start: Vec<&str> = if n % 2 == 0 {
            vec!["start", "--mystery", "--code", &code, "--student", "sam"]
        } else {
            vec![
                "start",
                "--mystery",
                "--seed",
                &seed_text,
                "--class-secret",
                SECRET,
                "--student",
                "sam",
            ]
        };
        let started = lab_cmd(&pair, &dir, &start);
        assert!(started.status.success(), "{}", said(&started));

        // The lab acts as the named one does, and both services say only "sealed".
        let (service, symptom) = log_symptom(name);
        let (logs, from_line) = if service == "service-a" {
            (&pair.a.logs, from.0)
        } else {
            (&pair.b.logs, from.1)
        };
        wait_for_line_after(logs, from_line, symptom);
        for (logs, from_line) in [(&pair.a.logs, from.0), (&pair.b.logs, from.1)] {
            let injected: Vec<Value> = logs
                .all()
                .into_iter()
                .skip(from_line)
                .filter(|l| l["event"] == "fault_injected")
                .collect();
            assert_eq!(injected.len(), 1, "{name}: {injected:?}");
            assert_eq!(injected[0]["scenario"], "sealed", "{name}: {injected:?}");
        }
        let gauge = pair
            .b
            .series(r#"fault_injection_active{scenario="sealed"}"#)
            .await;
        assert_eq!(gauge, 1.0, "{name}: B's gauge");

        // A wrong answer: "wrong", where to look, none of the lab's own evidence.
        let guess = order[(n + 1) % order.len()];
        let wrong = lab_cmd(&pair, &dir, &["check", guess]);
        let wrong_text = said(&wrong);
        assert_eq!(wrong.status.code(), Some(1), "{wrong_text}");
        assert!(
            wrong_text.starts_with(&format!("wrong: it is not {guess}.")),
            "{wrong_text}"
        );
        assert!(wrong_text.contains("Look next:"), "{wrong_text}");
        assert!(!wrong_text.contains(scenario.log), "{wrong_text}");
        assert!(!wrong_text.contains("Alert:"), "{wrong_text}");

        // Everything a student sees now.
        let mut seen = Seen::default();
        seen.add("lab start", said(&started));
        seen.add("lab check (wrong)", wrong_text);
        pair.b.sync_logs().await;
        seen.add("A's stdout", pair.a.logs.raw().join("\n"));
        seen.add("B's stdout", pair.b.logs.raw().join("\n"));
        endpoints(&pair, &mut seen).await;
        let (spans, otlp_logs) = (otlp.spans(), otlp.logs());
        assert!(
            !spans.is_empty() && !otlp_logs.is_empty(),
            "nothing exported"
        );
        seen.add("spans", format!("{spans:?}"));
        seen.add("OTLP logs", format!("{otlp_logs:?}"));
        let state_text =
            std::fs::read_to_string(dir.join(lab::paths::STATE_FILE)).expect("the state file");
        let results_text =
            std::fs::read_to_string(dir.join(lab::paths::RESULTS_FILE)).expect("the results file");
        seen.add("state file", state_text.clone());
        let state: Value = serde_json::from_str(&state_text).expect("state is JSON");
        // This lab's lines (earlier labs' lines hold their own wrong guesses).
        let run = format!(r#""run":{}"#, state["run"]);
        let this_run: Vec<&str> = results_text.lines().filter(|l| l.contains(&run)).collect();
        assert_eq!(
            this_run.len(),
            2,
            "its start and one answer: {results_text}"
        );
        seen.add("results file", this_run.join("\n"));
        let traffic_pid = u32::try_from(state["traffic_pid"].as_u64().expect("pid")).expect("pid");
        let (args, environ) = process(traffic_pid);
        assert!(args.contains("--args-from-stdin"), "{args}");
        seen.add("ps of the traffic generator", args);
        seen.add("environment of the traffic generator", environ);
        seen.assert_hides(scenario);

        // The state holds the code the student was given, and nothing made from the lab's
        // name; the lab was started and the answer recorded, sealed, in an unbroken chain.
        let mut fields: Vec<&str> = state
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "attempts",
                "class",
                "code",
                "results",
                "run",
                "started_at",
                "student",
                "traffic_pid"
            ],
            "{state_text}"
        );
        assert_eq!(state["code"], code.as_str(), "{state_text}");
        let file = lab::results::read(&results_text, "results");
        assert!(file.breaks.is_empty(), "{:?}", file.breaks);
        let [start, check] = &file.records[file.records.len() - 2..] else {
            panic!("{results_text}")
        };
        assert_eq!(start.1.event, Event::Start, "{results_text}");
        let record = &check.1;
        assert_eq!(
            (
                record.event,
                record.student.as_str(),
                record.code.as_deref(),
                record.lab.as_str(),
                record.answer.as_deref(),
                record.right,
                record.attempt
            ),
            (
                Event::Check,
                "sam",
                Some(code.as_str()),
                SEALED,
                Some(guess),
                Some(false),
                1
            ),
            "{results_text}"
        );
        assert!(record.seconds > 0.0, "{results_text}");

        // The teacher's key names the lab that ran; so does `lab stop`.
        let key = lab_cmd(
            &pair,
            &dir,
            &["key", "--seed", &seed_text, "--class-secret", SECRET],
        );
        let key_text = said(&key);
        assert!(key.status.success(), "{key_text}");
        let row = key_text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(seed_text.as_str()))
            .unwrap_or_else(|| panic!("no row for seed {seed}: {key_text}"));
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>()[1..],
            [*name, code.as_str()],
            "{key_text}"
        );
        let stopped = lab_cmd(&pair, &dir, &["stop"]);
        assert!(
            said(&stopped).contains(&format!("The lab was: {name}")),
            "{}",
            said(&stopped)
        );
        assert!(
            !alive(traffic_pid),
            "{name}: lab stop returned before its traffic had exited"
        );
    }
}

/// Whether a process runs (a zombie, ended but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(") ")
            .next()
            .unwrap_or_default()
            .starts_with('Z')
    })
}

/// Without the class secret, no key: `lab key` and `lab start --seed` refuse, a short secret
/// is refused, and another secret lists another key.
#[test]
fn the_key_needs_the_class_secret() {
    let lab = |args: &[&str]| {
        Command::new(binary(Kind::Lab))
            .args(args)
            .arg("--state-dir")
            .arg(state_dir("key"))
            .env_remove("LAB_CLASS_SECRET")
            .output()
            .expect("run lab")
    };
    let without = lab(&["key", "--seed", "1-30"]);
    assert_eq!(without.status.code(), Some(2), "{}", said(&without));
    assert!(
        said(&without).contains("class secret"),
        "{}",
        said(&without)
    );
    let start = lab(&["start", "--mystery", "--seed", "3"]);
    assert_eq!(start.status.code(), Some(2), "{}", said(&start));
    assert!(said(&start).contains("class secret"), "{}", said(&start));
    let short = lab(&["key", "--seed", "1", "--class-secret", "short"]);
    assert_eq!(short.status.code(), Some(2), "{}", said(&short));

    let listed = |secret: &str| {
        let output = lab(&["key", "--seed", "1-30", "--class-secret", secret]);
        assert!(output.status.success(), "{}", said(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let ours = listed(SECRET);
    assert_eq!(ours.lines().count(), 31, "{ours}");
    assert_ne!(ours, listed("another class's secret"));
    // From the environment, as a teacher keeps it out of the shell's history.
    let from_env = Command::new(binary(Kind::Lab))
        .args(["key", "--seed", "1-30"])
        .env("LAB_CLASS_SECRET", SECRET)
        .output()
        .expect("run lab");
    assert_eq!(String::from_utf8_lossy(&from_env.stdout), ours);
}
