//! The labs for a class: a mystery lab is sealed (nothing a student reads while diagnosing
//! names it), its answer key needs the class secret, and a class's results files make one
//! report.
//!
//! The sealing test runs all seven labs as mysteries, one after the other, on one pair of
//! services exporting spans and OTLP logs to a receiver, and for each greps every byte a
//! student can see for the lab's name, title and settings.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lab::key::Code;
use lab::results::{Record, SEALED};
use serde_json::Value;
use system_tests::labs::{SYMPTOM_WITHIN, log_symptom, said, state_dir};
use system_tests::otlp::OtlpReceiver;
use system_tests::{Kind, Service, binary, client, vacant_addr};

const SECRET: &str = "the tests' class secret";

/// The first seed whose mystery is `name`, under [`SECRET`].
fn seed_for(name: &str) -> u64 {
    (0..10_000)
        .find(|seed| Code::new(SECRET, *seed).lab().name == name)
        .unwrap_or_else(|| panic!("no seed hides {name}"))
}

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
    /// lab's name (the answers to choose from) names none of them.
    fn assert_hides(&self, lab: &lab::Scenario) {
        let mut leaks = Vec::new();
        let every_name = lab::names();
        for needle in giveaways(lab) {
            for (source, text) in &self.0 {
                let text = &text.replace(&every_name, "(every lab's name)");
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
struct Pair {
    a: Service,
    b: Service,
    a_faults: String,
    b_faults: String,
}

impl Pair {
    fn start(otlp: &OtlpReceiver) -> Self {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url.as_str()),
            ("OTEL_LOGS_EXPORTER", "otlp"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
        ];
        let (a_fault_addr, b_fault_addr) = (vacant_addr().to_string(), vacant_addr().to_string());
        let a = Service::start(
            Kind::A,
            "127.0.0.1:0",
            &["--fault-listen", &a_fault_addr],
            &env,
        );
        let provider = a.url();
        let b = Service::start(
            Kind::B,
            "127.0.0.1:0",
            &["--provider-url", &provider, "--fault-listen", &b_fault_addr],
            &env,
        );
        Self {
            a,
            b,
            a_faults: format!("http://{a_fault_addr}/faults"),
            b_faults: format!("http://{b_fault_addr}/faults"),
        }
    }
}

/// `lab <args>` against `pair`, with its files in `dir`, the class secret not in the
/// environment, and Prometheus nowhere (a wrong answer must not need one).
fn lab_cmd(pair: &Pair, dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary(Kind::Lab))
        .args(args)
        .args(["--b", &pair.b.url(), "--a-faults", &pair.a_faults])
        .args(["--b-faults", &pair.b_faults])
        .args(["--prometheus", &format!("http://{}", vacant_addr())])
        .arg("--state-dir")
        .arg(dir)
        .env_remove("LAB_CLASS_SECRET")
        .env_remove("LAB_STUDENT")
        .output()
        .expect("run lab")
}

/// Waits (bounded) until a line of `logs` after the first `from` matches `symptom`.
fn wait_for_line_after(logs: &system_tests::Logs, from: usize, symptom: fn(&Value) -> bool) {
    let deadline = Instant::now() + SYMPTOM_WITHIN;
    while !logs.all().iter().skip(from).any(symptom) {
        assert!(
            Instant::now() < deadline,
            "no symptom in the logs within {SYMPTOM_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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

/// The command line and environment of a process, as `ps` and `/proc` show them.
fn process(pid: u32) -> (String, String) {
    let ps = Command::new("ps")
        .args(["-o", "args=", "-p", &pid.to_string()])
        .output()
        .expect("run ps");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    (
        String::from_utf8_lossy(&ps.stdout).into_owned(),
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
    let pair = Pair::start(&otlp);
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
        assert_eq!(this_run.len(), 1, "{results_text}");
        seen.add("results file", this_run.join("\n"));
        let traffic_pid = u32::try_from(state["traffic_pid"].as_u64().expect("pid")).expect("pid");
        let (args, environ) = process(traffic_pid);
        assert!(args.contains("--args-from-stdin"), "{args}");
        seen.add("ps of the traffic generator", args);
        seen.add("environment of the traffic generator", environ);
        seen.assert_hides(scenario);

        // The answer was recorded, sealed.
        let (records, _) = lab::results::read(&results_text, "results");
        let record: &Record = records.last().expect("a record");
        assert_eq!(
            (
                record.student.as_str(),
                record.seed,
                record.lab.as_str(),
                record.answer.as_str(),
                record.right,
                record.attempt
            ),
            ("sam", Some(seed), SEALED, guess, false, 1),
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
        let deadline = Instant::now() + system_tests::TIMEOUT;
        while alive(traffic_pid) {
            assert!(
                Instant::now() < deadline,
                "{name}: lab stop left its traffic running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// One student's lab run, for records as `lab check` writes them.
struct Run {
    student: &'static str,
    run: &'static str,
    seed: Option<u64>,
    lab: &'static str,
}

impl Run {
    fn new(student: &'static str, run: &'static str, seed: Option<u64>, lab: &'static str) -> Self {
        Self {
            student,
            run,
            seed,
            lab,
        }
    }

    /// The record of answer number `attempt`, given at 10:`minute`, `seconds` after the start.
    fn check(&self, attempt: u32, answer: &str, right: bool, minute: u32, seconds: f64) -> Record {
        Record {
            ts: format!("2026-12-01T10:{minute:02}:00Z"),
            student: self.student.into(),
            run: self.run.into(),
            seed: self.seed,
            lab: self.lab.into(),
            answer: answer.into(),
            right,
            attempt,
            seconds,
        }
    }
}

/// Three students' results files (as `lab check` writes them) make one report: one row per
/// student and lab, solved or not, answers to the first right one, seconds, every answer;
/// a lab nobody found stays sealed unless the teacher gives the class secret.
#[test]
fn three_students_make_one_report() {
    let dir = state_dir("report");
    std::fs::create_dir_all(&dir).expect("dir");
    let mystery = seed_for("a-timeouts");
    let unsolved = seed_for("brute-force");
    let alice = Run::new("alice", "r-a1", Some(mystery), SEALED);
    let bob = Run::new("bob", "r-b1", Some(mystery), SEALED);
    let carol = Run::new("carol", "r-c1", Some(unsolved), SEALED);
    let carol_named = Run::new("carol", "r-c2", None, "a-slow");
    let mut files = Vec::new();
    for (student, records) in [
        ("alice", vec![alice.check(1, "a-timeouts", true, 2, 95.4)]),
        (
            "bob",
            vec![
                bob.check(1, "a-slow", false, 1, 60.0),
                bob.check(2, "a-flaky", false, 2, 130.0),
                bob.check(3, "a-timeouts", true, 3, 200.2),
                bob.check(4, "a-timeouts", true, 4, 210.0),
            ],
        ),
        (
            "carol",
            vec![
                carol.check(1, "a-down", false, 1, 40.0),
                carol.check(2, "retry-storm", false, 5, 300.0),
                carol_named.check(1, "a-slow", true, 9, 31.0),
            ],
        ),
    ] {
        let file = dir.join(format!("{student}.jsonl"));
        let text: String = records
            .iter()
            .map(|r| serde_json::to_string(r).expect("JSON") + "\n")
            .collect();
        std::fs::write(&file, text).expect("write");
        files.push(file);
    }
    let report = |extra: &[&str]| {
        let output = Command::new(binary(Kind::Lab))
            .arg("report")
            .args(&files)
            .args(extra)
            .env_remove("LAB_CLASS_SECRET")
            .output()
            .expect("run lab");
        assert!(output.status.success(), "{}", said(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let rows = |carol_lab: &str| {
        format!(
            "student,seed,lab,solved,attempts,seconds,answers\n\
             alice,{mystery},a-timeouts,yes,1,95,a-timeouts\n\
             bob,{mystery},a-timeouts,yes,3,200,a-slow a-flaky a-timeouts a-timeouts\n\
             carol,{unsolved},{carol_lab},no,2,300,a-down retry-storm\n\
             carol,,a-slow,yes,1,31,a-slow\n"
        )
    };
    assert_eq!(report(&["--csv"]), rows(SEALED));
    assert_eq!(
        report(&["--csv", "--class-secret", SECRET]),
        rows("brute-force")
    );
    let table = report(&[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("student  seed  lab"), "{table}");
    let bob: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        bob[..6],
        ["bob", &mystery.to_string(), "a-timeouts", "yes", "3", "200"]
    );
    // Columns line up: every row's lab starts where the header's does.
    let at = lines[0].find("lab").expect("lab column");
    for line in &lines[1..] {
        assert!(
            line[at..].starts_with("a-") || line[at..].starts_with(SEALED),
            "{table}"
        );
    }
}

/// `lab check … | head -3`: the reader goes away, and lab neither panics nor says so; the
/// answer is still graded (exit status) and recorded.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = state_dir("pipe");
    std::fs::create_dir_all(&dir).expect("dir");
    // A running lab as `lab start` leaves it, without services: the check's example request
    // and queries fail fast.
    let state = serde_json::json!({
        "scenario": "retry-storm", "mystery": false, "run": "r1",
        "started_at": 0.0, "traffic_pid": 0
    });
    std::fs::write(dir.join(lab::paths::STATE_FILE), state.to_string()).expect("state");
    let nowhere = format!("http://{}", vacant_addr());
    let mut child = Command::new(binary(Kind::Lab))
        .args([
            "check",
            "retry-storm",
            "--b",
            &nowhere,
            "--prometheus",
            &nowhere,
        ])
        .arg("--state-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run lab");
    // The reader is gone before lab writes its first line (it is still starting up).
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("lab exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let results =
        std::fs::read_to_string(dir.join(lab::paths::RESULTS_FILE)).expect("still recorded");
    assert_eq!(results.lines().count(), 1, "{results}");
}
