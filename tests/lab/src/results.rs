//! The record a teacher collects: every `lab check` appends one JSON line to the student's
//! results file, and `lab report` turns a class's files into one table, one row per student
//! and lab run: the lab, whether and after how many answers and seconds it was found.
//!
//! A record never names a mystery lab the student has not found: its `lab` is `sealed`
//! until then (a right answer names it, as `answer`). The report fills the name in from the
//! seed for a teacher who gives the class secret.

use serde::{Deserialize, Serialize};

use crate::key::Code;

/// What a record says of a mystery lab instead of its name.
pub const SEALED: &str = "sealed";

/// One `lab check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When (RFC 3339, UTC).
    pub ts: String,
    /// Who: `--student`, or the login name.
    pub student: String,
    /// Which run of `lab start` (random per start), so two labs of one student stay apart.
    pub run: String,
    /// The mystery's seed, when it had one.
    pub seed: Option<u64>,
    /// The lab's name, or [`SEALED`] for a mystery.
    pub lab: String,
    /// The answer given.
    pub answer: String,
    /// Whether it was right.
    pub right: bool,
    /// How many answers this run has had, this one included.
    pub attempt: u32,
    /// Seconds since `lab start`.
    pub seconds: f64,
}

/// One row of the report: one student's one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The student.
    pub student: String,
    /// The seed, if any.
    pub seed: Option<u64>,
    /// The lab: its name when known (a named lab, a right answer, or the class secret), or
    /// [`SEALED`].
    pub lab: String,
    /// Whether it was found.
    pub solved: bool,
    /// Answers up to and including the first right one (all of them when never right).
    pub attempts: u32,
    /// Seconds from `lab start` to the first right answer (to the last answer when never
    /// right).
    pub seconds: f64,
    /// Every answer, in order.
    pub answers: Vec<String>,
}

/// Reads the records of one results file; lines that are not a record are skipped, each
/// named in the returned warnings.
pub fn read(text: &str, file: &str) -> (Vec<Record>, Vec<String>) {
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push(record),
            Err(e) => warnings.push(format!("{file}:{}: skipped, not a lab record ({e})", n + 1)),
        }
    }
    (records, warnings)
}

/// The report's rows, by student, then by when each run's first answer came. With the class
/// secret, a sealed lab's seed names it.
pub fn rows(records: &[Record], secret: Option<&str>) -> Vec<Row> {
    let mut runs: Vec<(String, String, Vec<&Record>)> = Vec::new();
    for record in records {
        match runs
            .iter_mut()
            .find(|(student, run, _)| *student == record.student && *run == record.run)
        {
            Some((_, _, list)) => list.push(record),
            None => runs.push((record.student.clone(), record.run.clone(), vec![record])),
        }
    }
    let mut rows: Vec<(String, Row)> = runs
        .into_iter()
        .map(|(student, _, mut list)| {
            list.sort_by(|a, b| a.attempt.cmp(&b.attempt).then(a.ts.cmp(&b.ts)));
            let first_right = list.iter().position(|r| r.right);
            let counted = first_right.map_or(list.len(), |i| i + 1);
            let last = list[counted - 1];
            let seed = list[0].seed;
            let lab = if list[0].lab != SEALED {
                list[0].lab.clone()
            } else if let Some(i) = first_right {
                list[i].answer.clone()
            } else if let (Some(secret), Some(seed)) = (secret, seed) {
                Code::new(secret, seed).lab().name.to_owned()
            } else {
                SEALED.to_owned()
            };
            let first_ts = list[0].ts.clone();
            let row = Row {
                student,
                seed,
                lab,
                solved: first_right.is_some(),
                attempts: u32::try_from(counted).unwrap_or(u32::MAX),
                seconds: last.seconds,
                answers: list.iter().map(|r| r.answer.clone()).collect(),
            };
            (first_ts, row)
        })
        .collect();
    rows.sort_by(|(ts_a, a), (ts_b, b)| a.student.cmp(&b.student).then(ts_a.cmp(ts_b)));
    rows.into_iter().map(|(_, row)| row).collect()
}

const HEADER: [&str; 7] = [
    "student", "seed", "lab", "solved", "attempts", "seconds", "answers",
];

fn cells(row: &Row) -> [String; 7] {
    [
        row.student.clone(),
        row.seed.map_or_else(String::new, |s| s.to_string()),
        row.lab.clone(),
        if row.solved { "yes" } else { "no" }.to_owned(),
        row.attempts.to_string(),
        format!("{:.0}", row.seconds),
        row.answers.join(" "),
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
    let all: Vec<[String; 7]> = std::iter::once(HEADER.map(str::to_owned))
        .chain(rows.iter().map(cells))
        .collect();
    let width = |i: usize| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..HEADER.len()).map(width).collect();
    let numeric = [false, true, false, false, true, true, false];
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
    use super::*;

    fn record(student: &str, run: &str, attempt: u32, answer: &str, right: bool) -> Record {
        Record {
            ts: format!("2026-12-01T10:0{attempt}:00Z"),
            student: student.into(),
            run: run.into(),
            seed: Some(42),
            lab: SEALED.into(),
            answer: answer.into(),
            right,
            attempt,
            seconds: f64::from(attempt) * 60.0,
        }
    }

    #[test]
    fn the_first_right_answer_ends_the_count() {
        let records = vec![
            record("bo", "r2", 1, "a-slow", false),
            record("bo", "r2", 2, "a-flaky", true),
            record("bo", "r2", 3, "a-flaky", true),
            record("al", "r1", 1, "a-flaky", true),
            record("cy", "r3", 1, "a-down", false),
        ];
        let rows = rows(&records, None);
        let summary: Vec<(&str, &str, bool, u32, f64)> = rows
            .iter()
            .map(|r| {
                (
                    r.student.as_str(),
                    r.lab.as_str(),
                    r.solved,
                    r.attempts,
                    r.seconds,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("al", "a-flaky", true, 1, 60.0),
                ("bo", "a-flaky", true, 2, 120.0),
                ("cy", SEALED, false, 1, 60.0),
            ]
        );
        let secret = "a class secret";
        let with_key = super::rows(&records, Some(secret));
        assert_eq!(with_key[2].lab, Code::new(secret, 42).lab().name);
    }

    #[test]
    fn csv_quotes_what_needs_it_and_the_table_aligns() {
        let mut row = rows(&[record("Lee, Ann", "r", 1, "a-down", false)], None).remove(0);
        row.answers.push("say \"hi\"".into());
        assert_eq!(
            csv(&[row.clone()]),
            "student,seed,lab,solved,attempts,seconds,answers\n\"Lee, Ann\",42,sealed,no,1,60,\"a-down say \"\"hi\"\"\"\n"
        );
        let table = table(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].find("seed"),
            Some(lines[1].find("42").expect("seed") - 2)
        );
    }

    #[test]
    fn lines_that_are_not_records_are_named() {
        let good = serde_json::to_string(&record("al", "r1", 1, "a-slow", true)).expect("JSON");
        let (records, warnings) = read(&format!("{good}\nnonsense\n\n"), "al.jsonl");
        assert_eq!(records.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("al.jsonl:2:"), "{warnings:?}");
    }
}
