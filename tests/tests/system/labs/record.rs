//! The record a teacher collects (docs/labs.md, "What is recorded, and where"): every start,
//! check and stop of a lab, chained, in the results file `lab start` chose, and `lab report`
//! that checks it. A forged row, a diverted record and a replayed code are each flagged or
//! refused; a class's files make one report; a closed pipe loses no answer.

use std::process::Command;

use lab::results::{Event, Record, SEALED};
use system_tests::labs::{Pair, SECRET, code_for, said, seed_for, state_dir};
use system_tests::{Kind, binary, vacant_addr};

/// One student's lab run, for records as `lab` writes them.
struct Run {
    student: &'static str,
    run: &'static str,
    code: Option<String>,
    lab: &'static str,
}

impl Run {
    fn named(student: &'static str, run: &'static str, lab: &'static str) -> Self {
        Self {
            student,
            run,
            code: None,
            lab,
        }
    }

    fn mystery(student: &'static str, run: &'static str, code: String) -> Self {
        Self {
            student,
            run,
            code: Some(code),
            lab: SEALED,
        }
    }

    /// Its start at 10:`from`, each `(answer, right, minute, seconds)`, and a stop after.
    fn records(&self, from: u32, answers: &[(&str, bool, u32, f64)]) -> Vec<Record> {
        let record = |event, minute: u32, seconds, attempt| Record {
            seq: 0,
            ts: format!("2026-12-01T10:{minute:02}:00Z"),
            event,
            student: self.student.into(),
            run: self.run.into(),
            code: self.code.clone(),
            lab: self.lab.into(),
            answer: None,
            replica: None,
            right: None,
            attempt,
            seconds,
            prev: String::new(),
            hash: String::new(),
        };
        let mut records = vec![record(Event::Start, from, 0.0, 0)];
        for (n, (answer, right, minute, seconds)) in answers.iter().enumerate() {
            let attempt = u32::try_from(n + 1).expect("few");
            records.push(Record {
                answer: Some((*answer).into()),
                right: Some(*right),
                ..record(Event::Check, *minute, *seconds, attempt)
            });
        }
        let last = answers.last().map_or(from, |a| a.2);
        let count = u32::try_from(answers.len()).expect("few");
        records.push(record(Event::Stop, last, 600.0, count));
        records
    }
}

/// Writes `records`, chained as `lab` chains them, to `dir/<name>`.
fn write(dir: &std::path::Path, name: &str, mut records: Vec<Record>) -> std::path::PathBuf {
    lab::results::chain(&mut records);
    let file = dir.join(name);
    std::fs::write(&file, lab::results::text(&records)).expect("write");
    file
}

/// `lab report <files> <extra>`: its exit code, stdout, stderr.
fn report(files: &[std::path::PathBuf], extra: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary(Kind::Lab))
        .arg("report")
        .args(files)
        .args(extra)
        .env_remove("LAB_CLASS_SECRET")
        .output()
        .expect("run lab");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Three students' results files make one report: one row per student and lab, solved or
/// not, answers to the first right one, seconds, every answer; a lab nobody found stays
/// sealed unless the teacher gives the class secret.
#[test]
fn three_students_make_one_report() {
    let dir = state_dir("report");
    std::fs::create_dir_all(&dir).expect("dir");
    let (mystery, unsolved) = (seed_for("a-timeouts"), seed_for("brute-force"));
    let alice = Run::mystery("alice", "r-a1", code_for("a-timeouts"));
    let bob = Run::mystery("bob", "r-b1", code_for("a-timeouts"));
    let carol = Run::mystery("carol", "r-c1", code_for("brute-force"));
    let carol_named = Run::named("carol", "r-c2", "a-slow");
    let files = [
        write(
            &dir,
            "alice.jsonl",
            alice.records(0, &[("a-timeouts", true, 2, 95.4)]),
        ),
        write(
            &dir,
            "bob.jsonl",
            bob.records(
                0,
                &[
                    ("a-slow", false, 1, 60.0),
                    ("a-flaky", false, 2, 130.0),
                    ("a-timeouts", true, 3, 200.2),
                    ("a-timeouts", true, 4, 210.0),
                ],
            ),
        ),
        write(
            &dir,
            "carol.jsonl",
            [
                carol.records(
                    0,
                    &[("a-down", false, 1, 40.0), ("retry-storm", false, 5, 300.0)],
                ),
                carol_named.records(8, &[("a-slow", true, 9, 31.0)]),
            ]
            .concat(),
        ),
    ];

    let rows = |carol_lab: &str| {
        format!(
            "student,seed,lab,solved,attempts,seconds,answers,flags\n\
             alice,{mystery},a-timeouts,yes,1,95,a-timeouts,\n\
             bob,{mystery},a-timeouts,yes,3,200,a-slow a-flaky a-timeouts a-timeouts,\n\
             carol,{unsolved},{carol_lab},no,2,300,a-down retry-storm,\n\
             carol,,a-slow,yes,1,31,a-slow,\n"
        )
    };
    let (code, csv, stderr) = report(&files, &["--csv"]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    assert_eq!(csv, rows(SEALED));
    assert_eq!(
        report(&files, &["--csv", "--class-secret", SECRET]).1,
        rows("brute-force")
    );
    let table = report(&files, &[]).1;
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

/// A row edited by hand breaks the chain; a file forged whole (re-chained) still cannot
/// claim a lab the key contradicts, nor carry a code the key does not have; a wrong secret
/// is refused rather than naming wrong labs.
#[test]
fn a_forged_row_is_flagged_and_never_solved() {
    let dir = state_dir("forged");
    std::fs::create_dir_all(&dir).expect("dir");
    let ada = Run::mystery("ada", "r1", code_for("a-timeouts"));
    let honest = ada.records(
        0,
        &[("a-slow", false, 3, 190.0), ("a-timeouts", true, 7, 412.0)],
    );
    let honest_file = write(&dir, "ada.jsonl", honest);
    let (_, csv, _) = report(
        std::slice::from_ref(&honest_file),
        &["--csv", "--class-secret", SECRET],
    );
    assert!(
        csv.lines()
            .nth(1)
            .is_some_and(|l| l.contains(",yes,2,412,")),
        "{csv}"
    );

    // By hand: the wrong first answer claimed right.
    let text = std::fs::read_to_string(&honest_file).expect("read");
    let edited = text.replacen(r#""right":false"#, r#""right":true"#, 1);
    assert_ne!(edited, text);
    std::fs::write(&honest_file, edited).expect("write");
    let (code, csv, stderr) = report(std::slice::from_ref(&honest_file), &["--csv"]);
    assert_eq!(code, Some(0));
    assert!(stderr.contains("ada.jsonl:2: edited"), "{stderr}");
    let row = csv.lines().nth(1).expect("a row");
    let broken = format!("chain broken at {}:2", honest_file.display());
    assert!(row.contains(",no,") && row.contains(&broken), "{csv}");

    // Whole, re-chained: seed 2's code (another lab) claimed solved as a-slow, beside a code
    // no key has.
    let alan = Run::mystery("alan", "r2", code_for("a-down"));
    let forged_code = lab::key::Code::new("not this class's secret", 2).to_string();
    let mallory = Run::mystery("mallory", "r3", forged_code);
    let files = [
        write(
            &dir,
            "alan.jsonl",
            alan.records(0, &[("a-slow", true, 1, 60.0)]),
        ),
        write(
            &dir,
            "mallory.jsonl",
            mallory.records(0, &[("a-slow", true, 1, 60.0)]),
        ),
    ];
    let (_, without_key, _) = report(&files, &["--csv"]);
    assert!(
        without_key
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains(",yes,")),
        "the chain holds; without the key nothing contradicts it: {without_key}"
    );
    let (code, csv, _) = report(&files, &["--csv", "--class-secret", SECRET]);
    assert_eq!(code, Some(0), "{csv}");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(
        rows[0].starts_with("alan,") && rows[0].contains(",a-down,no,"),
        "{csv}"
    );
    assert!(
        rows[0].ends_with(",a-slow marked right against the key"),
        "{csv}"
    );
    assert!(
        rows[1].contains(",sealed,no,") && rows[1].ends_with(",code not in the class's key"),
        "{csv}"
    );

    // A wrong secret fits none of the codes: refused.
    let (code, out, stderr) = report(&files[..1], &["--class-secret", "last year's secret"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.is_empty(), "{out}");
    assert!(stderr.contains("fits none of the 1 codes"), "{stderr}");
}

/// A mystery's records go where the teacher collects: `lab start` refuses `--results` (a
/// scratch file, or one that keeps nothing), and `--results` (or a name other than the
/// starter's) given to `lab check` or `lab stop` is refused before anything is graded.
#[test]
fn a_mystery_s_records_cannot_be_diverted() {
    let pair = Pair::start(&[]);
    let dir = state_dir("diverted");
    let results = dir.join(lab::paths::RESULTS_FILE);
    let code = code_for("a-flaky");
    let lines = || {
        std::fs::read_to_string(&results)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };

    let refused = pair.lab(
        &dir,
        &[
            "start",
            "--mystery",
            "--code",
            &code,
            "--results",
            "/dev/null",
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(
        said(&refused).contains("where the teacher collects"),
        "{}",
        said(&refused)
    );
    let scratch = dir.join("scratch.jsonl");
    let scratch = scratch.to_str().expect("a path");
    let refused = pair.lab(
        &dir,
        &["start", "--mystery", "--code", &code, "--results", scratch],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(
        !dir.join(lab::paths::STATE_FILE).exists(),
        "nothing started"
    );

    let started = pair.lab(
        &dir,
        &["start", "--mystery", "--code", &code, "--student", "ada"],
    );
    assert!(started.status.success(), "{}", said(&started));
    assert_eq!(lines(), 1, "the start is recorded");
    for diverted in [
        vec!["check", "a-slow", "--results", "/dev/null"],
        vec!["check", "a-slow", "--student", "eve"],
        vec!["stop", "--results", "/dev/null"],
    ] {
        let output = pair.lab(&dir, &diverted);
        let text = said(&output);
        assert_eq!(output.status.code(), Some(2), "{diverted:?}: {text}");
        assert!(
            !text.contains("right") && !text.contains("wrong") && !text.contains("The lab was"),
            "{diverted:?} graded or revealed: {text}"
        );
        assert_eq!(lines(), 1, "{diverted:?} recorded nothing");
    }
    let check = pair.lab(&dir, &["check", "a-slow"]);
    assert_eq!(check.status.code(), Some(1), "{}", said(&check));
    assert!(said(&check).starts_with("wrong"), "{}", said(&check));
    let stopped = pair.lab(&dir, &["stop"]);
    assert!(
        said(&stopped).contains("The lab was: a-flaky"),
        "{}",
        said(&stopped)
    );
    let file = lab::results::read(&std::fs::read_to_string(&results).expect("read"), "r");
    let events: Vec<Event> = file.records.iter().map(|(_, r)| r.event).collect();
    assert_eq!(events, [Event::Start, Event::Check, Event::Stop]);
    assert!(file.breaks.is_empty(), "{:?}", file.breaks);
}

/// Stop (the lab is revealed), start the same code again, answer right: `lab check` says
/// right at once, as always, and the report flags the second run, never counted as solved.
#[test]
fn a_replayed_code_is_flagged_and_never_solved() {
    let pair = Pair::start(&[]);
    let dir = state_dir("replayed");
    let code = code_for("a-flaky");
    let start = ["start", "--mystery", "--code", &code, "--student", "ada"];
    assert!(pair.lab(&dir, &start).status.success());
    assert_eq!(pair.lab(&dir, &["check", "a-slow"]).status.code(), Some(1));
    let stopped = pair.lab(&dir, &["stop"]);
    assert!(
        said(&stopped).contains("The lab was: a-flaky"),
        "{}",
        said(&stopped)
    );

    assert!(pair.lab(&dir, &start).status.success());
    let right = pair.lab(&dir, &["check", "a-flaky"]);
    assert!(said(&right).starts_with("right: "), "{}", said(&right));
    assert!(pair.lab(&dir, &["stop"]).status.success());

    let results = dir.join(lab::paths::RESULTS_FILE);
    for secret in [None, Some(SECRET)] {
        let mut extra = vec!["--csv"];
        extra.extend(secret.map(|s| ["--class-secret", s]).into_iter().flatten());
        let (code, csv, stderr) = report(std::slice::from_ref(&results), &extra);
        assert_eq!((code, stderr.as_str()), (Some(0), ""), "{csv}");
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), 2, "{csv}");
        assert!(
            rows[0].contains(",no,1,") && rows[0].ends_with(",a-slow,"),
            "{csv}"
        );
        assert!(rows[1].contains(",no,1,"), "never solved: {csv}");
        assert!(
            rows[1].ends_with(",run 2 of this code; revealed before the right answer"),
            "{csv}"
        );
    }
}

/// A mystery picked at random has a code of its own, which grades the answers and names
/// the lab at `lab stop`, and which no record carries: no key has it.
#[test]
fn a_random_mystery_keeps_its_code_out_of_the_record() {
    let pair = Pair::start(&[]);
    let dir = state_dir("random");
    let started = pair.lab(&dir, &["start", "--mystery", "--student", "ada"]);
    assert!(started.status.success(), "{}", said(&started));
    let state = std::fs::read_to_string(dir.join(lab::paths::STATE_FILE)).expect("state");
    let state: serde_json::Value = serde_json::from_str(&state).expect("JSON");
    assert_eq!(state["class"], false, "{state}");
    let code = lab::key::Code::parse(state["code"].as_str().expect("a code")).expect("parses");
    let wrong = lab::SCENARIOS
        .iter()
        .find(|s| s.name != code.lab().name)
        .expect("another lab");
    assert_eq!(
        pair.lab(&dir, &["check", wrong.name]).status.code(),
        Some(1)
    );
    let right = pair.lab(&dir, &["check", code.lab().name]);
    assert!(said(&right).starts_with("right: "), "{}", said(&right));
    let stopped = pair.lab(&dir, &["stop"]);
    let revealed = format!("The lab was: {}", code.lab().name);
    assert!(said(&stopped).contains(&revealed), "{}", said(&stopped));

    let results = dir.join(lab::paths::RESULTS_FILE);
    let file = lab::results::read(&std::fs::read_to_string(&results).expect("read"), "r");
    assert!(
        file.records
            .iter()
            .all(|(_, r)| r.code.is_none() && r.lab == SEALED)
    );
    let (_, csv, _) = report(std::slice::from_ref(&results), &["--csv"]);
    let row = csv.lines().nth(1).expect("a row");
    assert!(
        row.starts_with(&format!("ada,,{},yes,2,", code.lab().name)),
        "{csv}"
    );
}

/// `lab check … | head -3`: the reader goes away, and lab neither panics nor says so; the
/// answer is still graded (exit status) and recorded.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = state_dir("pipe");
    std::fs::create_dir_all(&dir).expect("dir");
    // A running lab as `lab start` leaves it, without services: the check's example request
    // and queries fail fast.
    let results = dir.join(lab::paths::RESULTS_FILE);
    let state = serde_json::json!({
        "scenario": "retry-storm", "run": "r1", "student": "sam", "results": results,
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
        .env_remove("LAB_RESULTS")
        .env_remove("LAB_STUDENT")
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
    let text = std::fs::read_to_string(&results).expect("still recorded");
    assert_eq!(text.lines().count(), 1, "{text}");
}
