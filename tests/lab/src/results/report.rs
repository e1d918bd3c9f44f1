//! `lab report`: a class's results files as one table, one row per student and lab run. A
//! run whose record does not hold up is flagged, in its row and in the CSV, and never
//! counted as solved: a file whose chain is broken, a run with no start, records that
//! disagree, answer numbers that skip, a code the class's key does not have, an answer
//! marked right or wrong against the key, the lab, the replica its stop revealed (or
//! against the other answers), a right answer after the lab was revealed (`lab stop`), and
//! a second run of one code.

use std::collections::BTreeSet;

use super::{Event, File, Record, SEALED};
use crate::key::Code;

/// One row of the report: one student's one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The student.
    pub student: String,
    /// A class mystery's seed (from its code).
    pub seed: Option<u64>,
    /// The lab: its name when known (a named lab, a right answer that holds up, or the
    /// class's key), or [`SEALED`].
    pub lab: String,
    /// Whether it was found, by a record that holds up (no flag).
    pub solved: bool,
    /// Answers up to and including the first right one (all of them when never right).
    pub attempts: u32,
    /// Seconds from `lab start` to the first right answer (to the last answer when never
    /// right).
    pub seconds: f64,
    /// Every answer, in order.
    pub answers: Vec<String>,
    /// Why the record of this run does not hold up; empty when it does.
    pub flags: Vec<String>,
}

/// Refuses a class secret that is not the one the files' codes were made with. Each code
/// carries 4 bytes of an HMAC keyed with the secret, so a wrong secret fits none of them
/// (one chance in four billion per code); a secret that fits some codes but not others
/// leaves those others flagged. Files with no code have nothing to check it against.
pub fn secret_fits(files: &[File], secret: &str) -> Result<(), String> {
    let codes: BTreeSet<&str> = files
        .iter()
        .flat_map(|f| &f.records)
        .filter_map(|(_, r)| r.code.as_deref())
        .collect();
    let parsed: Vec<Code> = codes.iter().filter_map(|c| Code::parse(c).ok()).collect();
    if parsed.is_empty() || parsed.iter().any(|c| c.is_of(secret)) {
        return Ok(());
    }
    Err(format!(
        "the class secret fits none of the {} codes in these files: it is not the secret \
         their key was made with (every code carries 4 bytes of an HMAC keyed with it)",
        parsed.len()
    ))
}

/// Where a record is, to tell what came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Place<'a> {
    ts: &'a str,
    file: usize,
    line: usize,
}

fn place<'a>(file: usize, (line, record): &'a (usize, Record)) -> Place<'a> {
    Place {
        ts: &record.ts,
        file,
        line: *line,
    }
}

/// Whether `a` came before `b`: in one file, by line (the order `lab` wrote them in, which
/// the chain holds); across files, by time.
fn before(a: Place<'_>, b: Place<'_>) -> bool {
    if a.file == b.file {
        a.line < b.line
    } else {
        a.ts < b.ts
    }
}

/// One run: its records in file order, and the file they are in.
struct Run<'a> {
    file: usize,
    records: Vec<&'a (usize, Record)>,
}

impl<'a> Run<'a> {
    fn first(&self) -> &'a Record {
        &self.records[0].1
    }

    fn start(&self) -> Place<'a> {
        place(self.file, self.records[0])
    }

    fn checks(&self) -> Vec<&'a (usize, Record)> {
        self.records
            .iter()
            .copied()
            .filter(|(_, r)| r.event == Event::Check)
            .collect()
    }
}

/// The report's rows, by student, then by when each run started. With the class secret
/// (see [`secret_fits`]), each code is checked against the key, and a sealed lab is named.
pub fn rows(files: &[File], secret: Option<&str>) -> Vec<Row> {
    let mut runs: Vec<Run<'_>> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        for entry in &file.records {
            match runs
                .iter_mut()
                .find(|run| run.file == i && run.first().run == entry.1.run)
            {
                Some(run) => run.records.push(entry),
                None => runs.push(Run {
                    file: i,
                    records: vec![entry],
                }),
            }
        }
    }
    let mut rows: Vec<(Place<'_>, Row)> = runs
        .iter()
        .map(|run| (run.start(), row(run, &runs, files, secret)))
        .collect();
    rows.sort_by(|(a, row_a), (b, row_b)| row_a.student.cmp(&row_b.student).then(a.cmp(b)));
    rows.into_iter().map(|(_, row)| row).collect()
}

fn row(run: &Run<'_>, runs: &[Run<'_>], files: &[File], secret: Option<&str>) -> Row {
    let first = run.first();
    let checks = run.checks();
    let mut flags = Vec::new();

    let file = &files[run.file];
    if let Some(first_break) = file.breaks.first() {
        let more = match file.breaks.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        flags.push(format!(
            "chain broken at {}:{}{more}",
            file.name, first_break.line
        ));
    }
    flags.extend(shape(run, &checks));

    // The code, and with the secret the lab the key gives it.
    let code = first.code.as_deref().map(Code::parse);
    let seed = match &code {
        Some(Ok(code)) => Some(code.seed),
        _ => None,
    };
    let mut key_lab = None;
    match (&code, secret) {
        (Some(Err(_)), _) => flags.push(format!("{:?} is not a lab code", first.code)),
        (Some(Ok(code)), Some(secret)) if code.is_of(secret) => key_lab = Some(code.lab().name),
        (Some(Ok(_)), Some(_)) => flags.push("code not in the class's key".to_owned()),
        _ => {}
    }
    let mystery = first.lab == SEALED;
    if !mystery && crate::scenario(&first.lab).is_none() {
        flags.push(format!("no lab called {:?}", first.lab));
    }
    let truth = if mystery {
        key_lab
    } else {
        Some(first.lab.as_str())
    };

    // Each answer against the truth, when it is known; else against the other answers. Of
    // a lab of A's replicas, the truth is the lab and the replica its stop revealed.
    let revealed = run
        .records
        .iter()
        .find(|(_, r)| r.event == Event::Stop)
        .and_then(|(_, r)| r.replica);
    let answers: Vec<(String, &Record)> = checks
        .iter()
        .filter(|(_, r)| r.right.is_some())
        .filter_map(|(_, r)| Some((r.shown_answer()?, r)))
        .collect();
    let mut unknown = truth.is_none();
    for (shown, record) in &answers {
        let answer = record.answer.as_deref().unwrap_or_default();
        let right = record.right == Some(true);
        if crate::scenario(answer)
            .is_none_or(|lab| lab.names_a_replica() != record.replica.is_some())
        {
            flags.push(format!("answer {shown:?} is no lab"));
        }
        let expected = match (truth, record.replica) {
            (None, _) => None,
            (Some(truth), _) if answer != truth => Some(false),
            (Some(_), Some(replica)) => revealed.map(|revealed| replica == revealed),
            (Some(_), None) => Some(true),
        };
        unknown |= expected.is_none();
        if expected.is_some_and(|expected| expected != right) {
            let marked = if right { "right" } else { "wrong" };
            let by = match (mystery, record.replica) {
                (true, _) => "the key",
                (false, Some(_)) => "the replica its stop revealed",
                (false, None) => "the lab",
            };
            flags.push(format!("{shown} marked {marked} against {by}"));
        }
    }
    if unknown {
        let rights: BTreeSet<&str> = answers
            .iter()
            .filter(|(_, r)| r.right == Some(true))
            .map(|(shown, _)| shown.as_str())
            .collect();
        let contradicted = answers
            .iter()
            .any(|(shown, r)| r.right == Some(false) && rights.contains(shown.as_str()));
        if rights.len() > 1 || contradicted {
            flags.push("answers marked right and wrong contradict each other".to_owned());
        }
    }

    // Of one code, the student's first run alone may count, and only before any reveal. A
    // run in the same results file is the same student's, whatever name it gives (a file is
    // one student's state directory): a new name cannot make a revealed code fresh.
    let first_right = checks.iter().position(|(_, r)| r.right == Some(true));
    if let Some(code) = first.code.as_deref() {
        let same_code = |other: &&Run<'_>| {
            other.first().code.as_deref() == Some(code)
                && (other.first().student == first.student || other.file == run.file)
        };
        let earlier = runs
            .iter()
            .filter(same_code)
            .filter(|other| before(other.start(), run.start()))
            .count();
        if earlier > 0 {
            flags.push(format!("run {} of this code", earlier + 1));
        }
        if let Some(i) = first_right {
            let answered = place(run.file, checks[i]);
            let revealed = runs.iter().filter(same_code).any(|other| {
                other.records.iter().any(|entry| {
                    entry.1.event == Event::Stop && before(place(other.file, entry), answered)
                })
            });
            if revealed {
                flags.push("revealed before the right answer".to_owned());
            }
        }
    }

    let counted = first_right.map_or(checks.len(), |i| i + 1);
    let solved = first_right.is_some() && flags.is_empty();
    let lab = match (truth, first_right) {
        (Some(truth), _) => truth.to_owned(),
        (None, Some(i)) if solved => checks[i].1.answer.clone().unwrap_or_default(),
        _ => SEALED.to_owned(),
    };
    Row {
        student: first.student.clone(),
        seed,
        lab,
        solved,
        attempts: u32::try_from(counted).unwrap_or(u32::MAX),
        seconds: counted
            .checked_sub(1)
            .map_or(0.0, |last| checks[last].1.seconds),
        answers: answers.iter().map(|(shown, _)| shown.clone()).collect(),
        flags,
    }
}

/// What is wrong with the shape of a run's records: a start first, then the answers
/// numbered 1, 2, 3…, then at most a stop that counts them; all of one student, code and lab.
fn shape(run: &Run<'_>, checks: &[&(usize, Record)]) -> Vec<String> {
    let first = run.first();
    let mut flags = Vec::new();
    if first.event != Event::Start {
        flags.push("no start recorded".to_owned());
    }
    let agree = run.records.iter().all(|(_, r)| {
        (&r.student, &r.code, &r.lab) == (&first.student, &first.code, &first.lab)
            && (r.event == Event::Check) == (r.answer.is_some() && r.right.is_some())
            && (r.event == Event::Check || (r.answer.is_none() && r.right.is_none()))
            && (r.event != Event::Start || r.replica.is_none())
    });
    if !agree {
        flags.push(
            "its records disagree (student, code, lab, or a check without an answer)".to_owned(),
        );
    }
    let events: Vec<Event> = run.records.iter().map(|(_, r)| r.event).collect();
    let stops = events.iter().filter(|e| **e == Event::Stop).count();
    let in_order = events.iter().skip(1).all(|e| *e != Event::Start)
        && (stops == 0 || (stops == 1 && events.last() == Some(&Event::Stop)));
    if !in_order {
        flags.push("records out of order".to_owned());
    }
    let numbered = checks
        .iter()
        .enumerate()
        .all(|(i, (_, r))| usize::try_from(r.attempt).is_ok_and(|a| a == i + 1));
    let counted = run
        .records
        .iter()
        .filter(|(_, r)| r.event == Event::Stop)
        .all(|(_, r)| usize::try_from(r.attempt).is_ok_and(|a| a == checks.len()));
    if !numbered || !counted {
        let numbers: Vec<String> = checks.iter().map(|(_, r)| r.attempt.to_string()).collect();
        flags.push(format!(
            "answers missing or repeated (numbered {})",
            numbers.join(", ")
        ));
    }
    flags
}

const HEADER: [&str; 8] = [
    "student", "seed", "lab", "solved", "attempts", "seconds", "answers", "flags",
];

fn cells(row: &Row) -> [String; 8] {
    [
        row.student.clone(),
        row.seed.map_or_else(String::new, |s| s.to_string()),
        row.lab.clone(),
        if row.solved { "yes" } else { "no" }.to_owned(),
        row.attempts.to_string(),
        format!("{:.0}", row.seconds),
        row.answers.join(" "),
        row.flags.join("; "),
    ]
}

/// The rows as CSV (RFC 4180: a header line, fields quoted when they need it).
pub fn csv(rows: &[Row]) -> String {
    let field = |text: &str| {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    };
    let mut out = HEADER.join(",");
    out.push('\n');
    for row in rows {
        let line: Vec<String> = cells(row).iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// The rows as a table for the terminal, columns aligned, numbers to the right.
pub fn table(rows: &[Row]) -> String {
    let all: Vec<[String; 8]> = std::iter::once(HEADER.map(str::to_owned))
        .chain(rows.iter().map(cells))
        .collect();
    let width = |i: usize| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..HEADER.len()).map(width).collect();
    let numeric = [false, true, false, false, true, true, false, false];
    let mut out = String::new();
    for line in &all {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if numeric[i] {
                text.push_str(&pad);
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&pad);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::super::{chain, read, text};
    use super::*;

    const SECRET: &str = "a class secret";

    /// The first seed whose lab is `name`, and its code.
    fn code_for(name: &str) -> String {
        (0..1000)
            .map(|seed| Code::new(SECRET, seed))
            .find(|code| code.lab().name == name)
            .expect("a seed")
            .to_string()
    }

    /// One file of `runs`, chained as `lab` writes it.
    fn file(name: &str, runs: Vec<Vec<Record>>) -> File {
        let mut records: Vec<Record> = runs.into_iter().flatten().collect();
        chain(&mut records);
        read(&text(&records), name)
    }

    fn summary(rows: &[Row]) -> Vec<(&str, &str, bool, u32, String)> {
        rows.iter()
            .map(|r| {
                (
                    r.student.as_str(),
                    r.lab.as_str(),
                    r.solved,
                    r.attempts,
                    r.flags.join("; "),
                )
            })
            .collect()
    }

    #[test]
    fn the_first_right_answer_ends_the_count() {
        let code = code_for("a-flaky");
        let files = [
            file(
                "bo",
                vec![run(
                    "bo",
                    "r2",
                    Some(&code),
                    &[("a-slow", false), ("a-flaky", true), ("a-flaky", true)],
                )],
            ),
            file(
                "al",
                vec![run("al", "r1", Some(&code), &[("a-flaky", true)])],
            ),
            file(
                "cy",
                vec![run("cy", "r3", Some(&code), &[("a-down", false)])],
            ),
        ];
        assert_eq!(
            summary(&rows(&files, None)),
            [
                ("al", "a-flaky", true, 1, String::new()),
                ("bo", "a-flaky", true, 2, String::new()),
                ("cy", SEALED, false, 1, String::new()),
            ]
        );
        let with_key = rows(&files, Some(SECRET));
        assert_eq!(with_key[2].lab, "a-flaky", "the key names it");
        assert_eq!(with_key[1].seconds, 120.0);
    }

    #[test]
    fn a_row_against_the_key_is_flagged_and_not_solved() {
        let code = code_for("a-down");
        // Re-chained, so only the key can tell: "a-slow" marked right.
        let forged = file(
            "al",
            vec![run("al", "r1", Some(&code), &[("a-slow", true)])],
        );
        let rows_without = rows(std::slice::from_ref(&forged), None);
        assert!(
            rows_without[0].solved,
            "without the key, nothing contradicts it"
        );
        let flagged = &rows(&[forged], Some(SECRET))[0];
        assert!(!flagged.solved);
        assert_eq!(flagged.lab, "a-down");
        assert_eq!(flagged.flags, ["a-slow marked right against the key"]);

        let named = file("bo", vec![run("bo", "r", None, &[("a-down", true)])]);
        assert_eq!(
            rows(&[named], None)[0].flags,
            ["a-down marked right against the lab"]
        );
        let both = file(
            "cy",
            vec![run(
                "cy",
                "r",
                Some(&code),
                &[("a-slow", true), ("a-down", true)],
            )],
        );
        assert_eq!(
            rows(&[both], None)[0].flags,
            ["answers marked right and wrong contradict each other"]
        );
    }

    #[test]
    fn a_second_run_of_a_code_and_a_reveal_before_the_answer_are_flagged() {
        let code = code_for("a-down");
        let mut second = run("al", "r2", Some(&code), &[("a-down", true)]);
        for record in &mut second {
            record.ts = record.ts.replace("T10:", "T11:");
        }
        let files = [file(
            "al",
            vec![run("al", "r1", Some(&code), &[("a-slow", false)]), second],
        )];
        let rows = rows(&files, Some(SECRET));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].flags, Vec::<String>::new());
        assert!(!rows[1].solved);
        assert_eq!(
            rows[1].flags,
            ["run 2 of this code", "revealed before the right answer"]
        );
        // Another student's run of the same code, in their own file, is theirs alone.
        let other = file(
            "bo",
            vec![run("bo", "r3", Some(&code), &[("a-down", true)])],
        );
        assert!(super::rows(&[other], Some(SECRET))[0].solved);

        // A second run under another name in the same file is the same student's.
        let mut renamed = run("al-again", "r4", Some(&code), &[("a-down", true)]);
        for record in &mut renamed {
            record.ts = record.ts.replace("T10:", "T11:");
        }
        let mut first = run("al", "r1", Some(&code), &[("a-slow", false)]);
        first.push({
            let mut stop = first[0].clone();
            stop.event = Event::Stop;
            stop
        });
        let files = [file("al", vec![first, renamed])];
        let rows = super::rows(&files, Some(SECRET));
        assert!(!rows[1].solved, "{:?}", rows[1].flags);
        assert!(
            rows[1].flags.contains(&"run 2 of this code".to_owned()),
            "{:?}",
            rows[1].flags
        );
    }

    #[test]
    fn an_answer_after_the_stop_in_the_same_run_is_a_reveal() {
        let code = code_for("a-down");
        let mut records = run("al", "r1", Some(&code), &[("a-slow", false)]);
        let mut late = records[1].clone();
        late.answer = Some("a-down".into());
        late.right = Some(true);
        late.attempt = 2;
        records.push(late);
        let rows = rows(&[file("al", vec![records])], None);
        assert!(!rows[0].solved);
        assert!(
            rows[0]
                .flags
                .iter()
                .any(|f| f == "revealed before the right answer"),
            "{:?}",
            rows[0].flags
        );
        assert!(
            rows[0]
                .flags
                .iter()
                .any(|f| f.starts_with("records out of order"))
        );
    }

    #[test]
    fn a_broken_chain_flags_every_row_of_its_file() {
        let code = code_for("a-down");
        let mut records: Vec<Record> = [
            run("al", "r1", None, &[("a-slow", true)]),
            run(
                "al",
                "r2",
                Some(&code),
                &[("a-slow", false), ("a-down", true)],
            ),
        ]
        .concat();
        chain(&mut records);
        records.remove(5);
        let file = read(&text(&records), "al.jsonl");
        let rows = rows(&[file], None);
        for row in &rows {
            assert!(!row.solved, "{row:?}");
            assert_eq!(row.flags[0], "chain broken at al.jsonl:6", "{row:?}");
        }
        assert!(
            rows[1]
                .flags
                .iter()
                .any(|f| f.starts_with("answers missing")),
            "{:?}",
            rows[1].flags
        );
    }

    #[test]
    fn a_run_without_its_start_or_with_a_foreign_code_is_flagged() {
        let code = code_for("a-down");
        let mut records = run("al", "r1", Some(&code), &[("a-down", true)]);
        records.remove(0);
        let rows_of = |records: Vec<Record>, secret| rows(&[file("al", vec![records])], secret);
        assert_eq!(rows_of(records, None)[0].flags, ["no start recorded"]);
        let foreign = Code::new("another class's secret", 5).to_string();
        let flagged = rows_of(
            run("al", "r1", Some(&foreign), &[("a-down", true)]),
            Some(SECRET),
        );
        assert_eq!(flagged[0].flags, ["code not in the class's key"]);
        assert_eq!(flagged[0].lab, SEALED);
    }

    #[test]
    fn a_wrong_secret_fits_no_code() {
        let files = [file(
            "al",
            vec![run("al", "r1", Some(&code_for("a-down")), &[])],
        )];
        assert!(secret_fits(&files, SECRET).is_ok());
        let refused = secret_fits(&files, "not the secret").expect_err("refused");
        assert!(refused.contains("fits none of the 1 codes"), "{refused}");
        let named = [file("bo", vec![run("bo", "r", None, &[])])];
        assert!(
            secret_fits(&named, "anything at all").is_ok(),
            "nothing to check"
        );
    }

    /// A run of the lab of A's replicas: each answer's replica, and the one its stop
    /// revealed (no stop: `None`).
    fn replica_run(answers: &[(u32, bool)], revealed: Option<u32>) -> Vec<Record> {
        let pairs: Vec<(&str, bool)> = answers
            .iter()
            .map(|(_, right)| ("a-replica-slow", *right))
            .collect();
        let mut records = run("al", "r1", None, &pairs);
        for record in &mut records {
            record.lab = "a-replica-slow".into();
        }
        for (record, (replica, _)) in records[1..].iter_mut().zip(answers) {
            record.replica = Some(*replica);
        }
        match revealed {
            Some(replica) => records.last_mut().expect("a stop").replica = Some(replica),
            None => {
                records.pop();
            }
        }
        records
    }

    #[test]
    fn a_replica_is_checked_against_the_one_the_stop_revealed() {
        let rows_of = |records| rows(&[file("al", vec![records])], None).remove(0);
        let found = rows_of(replica_run(&[(3, false), (2, true)], Some(2)));
        assert_eq!(found.flags, Vec::<String>::new());
        assert!(found.solved);
        assert_eq!(found.answers, ["a-replica-slow#3", "a-replica-slow#2"]);
        assert_eq!((found.lab.as_str(), found.attempts), ("a-replica-slow", 2));

        let forged = rows_of(replica_run(&[(3, true)], Some(2)));
        assert!(!forged.solved);
        assert_eq!(
            forged.flags,
            ["a-replica-slow#3 marked right against the replica its stop revealed"]
        );
        // Not stopped: nothing to check against but the other answers.
        assert!(rows_of(replica_run(&[(2, true)], None)).solved);
        assert_eq!(
            rows_of(replica_run(&[(2, true), (3, true)], None)).flags,
            ["answers marked right and wrong contradict each other"]
        );
        // A replica named with a lab of one A, or none with the lab of A's replicas.
        let mut odd = run("al", "r1", None, &[("a-slow", true)]);
        odd[1].replica = Some(2);
        assert_eq!(rows_of(odd).flags, ["answer \"a-slow#2\" is no lab"]);
    }

    #[test]
    fn csv_quotes_what_needs_it_and_the_table_aligns() {
        let mut row = rows(
            &[file(
                "f",
                vec![run("Lee, Ann", "r", None, &[("a-down", false)])],
            )],
            None,
        )
        .remove(0);
        row.answers.push("say \"hi\"".into());
        assert_eq!(
            csv(&[row.clone()]),
            "student,seed,lab,solved,attempts,seconds,answers,flags\n\"Lee, Ann\",,a-slow,no,1,60,\"a-down say \"\"hi\"\"\",\n"
        );
        let table = table(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("lab"), lines[1].find("a-slow"));
    }
}
