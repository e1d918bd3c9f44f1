//! The record a teacher collects: `lab start`, every `lab check` and `lab stop` each append
//! one JSON line (a [`Record`]) to the results file `lab start` chose. The lines are numbered
//! (`seq`) and chained: each carries the hash of the one before (`prev`) and its own
//! (`hash`), so a line edited, deleted, added or moved by hand breaks the chain.
//!
//! The chain is no signature. `lab` runs on the student's machine with no key of its own,
//! so a student who re-runs this file's code can write a whole file whose chain holds; what
//! the report checks against the class's key (each record's code, and whether an answer
//! marked right is right) holds all the same.
//!
//! A record never names a mystery lab: its `lab` is `sealed`, and it carries the code handed
//! out, which the report checks against the key when the teacher gives the class secret.
//! A lab of A's replicas is named, and the replica is its secret: a check records the one
//! it names, the stop the one that was broken, and the report checks each answer against
//! that.
//! [`report`] (in this module) makes the class's table and flags every run whose record does
//! not hold up.

mod report;

pub use report::{Row, csv, rows, secret_fits, table};

use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a record says of a mystery lab instead of its name.
pub const SEALED: &str = "sealed";

/// The `prev` of a file's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// `lab start`.
    Start,
    /// `lab check`: an answer.
    Check,
    /// `lab stop`: for a mystery, the moment its name is revealed.
    Stop,
}

/// One line of a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Its place in the file: 1, 2, 3…
    pub seq: u64,
    /// When (RFC 3339, UTC).
    pub ts: String,
    /// What happened.
    pub event: Event,
    /// Who: `--student` at `lab start`, or the login name.
    pub student: String,
    /// Which run of `lab start` (random per start), so two labs of one student stay apart.
    pub run: String,
    /// A class mystery's code, as handed out (or as `--seed` and the secret make it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The lab's name, or [`SEALED`] for a mystery.
    pub lab: String,
    /// A check's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The replica of A a check's answer names (a lab of `lab::REPLICA_LABS`), or the one a
    /// stop of such a lab reveals: 1, 2, 3… as `./deploy/run-local.sh --a-replicas` numbers
    /// them. Absent otherwise (and from every record before these labs, whose hash holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    /// Whether a check's answer was right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<bool>,
    /// A check: this answer's number in its run. A stop: the answers the run had. A start: 0.
    pub attempt: u32,
    /// Seconds since `lab start`.
    pub seconds: f64,
    /// The hash of the record before it in the file ([`GENESIS`] for the first).
    pub prev: String,
    /// This record's hash: SHA-256 of its JSON line with `hash` empty, in hexadecimal.
    pub hash: String,
}

impl Record {
    /// The hash this record should carry.
    pub fn digest(&self) -> String {
        let mut bare = self.clone();
        bare.hash.clear();
        let line = serde_json::to_string(&bare).unwrap_or_default();
        crate::key::hex(&Sha256::digest(line.as_bytes()))
    }

    /// Numbers and hashes this record as the one after `before` (`None`: the first).
    pub fn link(&mut self, before: Option<&Record>) {
        self.seq = before.map_or(1, |b| b.seq + 1);
        self.prev = before.map_or_else(|| GENESIS.to_owned(), |b| b.hash.clone());
        self.hash = self.digest();
    }

    /// A check's answer as the report shows it: the lab, and `#N` when it names replica N
    /// of A (`a-replica-slow#2`).
    pub fn shown_answer(&self) -> Option<String> {
        let answer = self.answer.as_deref()?;
        Some(match self.replica {
            Some(n) => format!("{answer}#{n}"),
            None => answer.to_owned(),
        })
    }

    /// The record as one line of a results file, newline included.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default() + "\n"
    }
}

/// Numbers and chains `records` as a whole file, from the first: what `lab` would have
/// written. (Anyone can run it: see the module's documentation.)
pub fn chain(records: &mut [Record]) {
    for i in 0..records.len() {
        let (before, rest) = records.split_at_mut(i);
        rest[0].link(before.last());
    }
}

/// The lines of `records`, as a file.
pub fn text(records: &[Record]) -> String {
    records.iter().map(Record::line).collect()
}

/// Appends `record` to the results file at `path`, numbered and chained after the file's
/// last record, and returns it as written. A lock file beside it (`<file>.lock`) keeps two
/// `lab` commands from numbering two records alike.
pub fn append(path: &Path, mut record: Record) -> Result<Record, String> {
    let _lock = crate::paths::Lock::take(path)?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let last = text
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Record>(line).ok());
    record.link(last.as_ref());
    crate::paths::append(path, record.line().as_bytes())?;
    Ok(record)
}

/// One results file as read: its records with their line numbers, and where its chain
/// breaks.
#[derive(Debug, Clone, Default)]
pub struct File {
    /// The file's name, as given.
    pub name: String,
    /// Each record and its line number (from 1).
    pub records: Vec<(usize, Record)>,
    /// Each place the chain breaks.
    pub breaks: Vec<Break>,
}

/// A place where a file's chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The line (from 1).
    pub line: usize,
    /// What is wrong there.
    pub why: String,
}

impl File {
    /// `<file>:<line>: why`, for each break.
    pub fn describe_breaks(&self) -> Vec<String> {
        self.breaks
            .iter()
            .map(|b| format!("{}:{}: {}", self.name, b.line, b.why))
            .collect()
    }
}

/// Reads one results file and follows its chain: a line that is not a record, a record
/// whose hash is not its own (edited), or one that does not follow the record before it
/// (records deleted, added or moved) is a break.
pub fn read(text: &str, name: &str) -> File {
    let mut file = File {
        name: name.to_owned(),
        ..File::default()
    };
    let mut expected = (1, GENESIS.to_owned());
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<Record>(line) {
            Ok(record) => record,
            Err(e) => {
                file.breaks.push(Break {
                    line: n,
                    why: format!("not a lab record ({e})"),
                });
                continue;
            }
        };
        if record.hash != record.digest() {
            file.breaks.push(Break {
                line: n,
                why: "edited (its hash is not its own)".to_owned(),
            });
        } else if (record.seq, &record.prev) != (expected.0, &expected.1) {
            file.breaks.push(Break {
                line: n,
                why: format!(
                    "record {} does not follow the one before (records deleted, added or moved)",
                    record.seq
                ),
            });
        }
        expected = (record.seq + 1, record.hash.clone());
        file.records.push((n, record));
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's records as `lab` writes them: a start, the checks, a stop.
    pub(super) fn run(
        student: &str,
        run: &str,
        code: Option<&str>,
        answers: &[(&str, bool)],
    ) -> Vec<Record> {
        let lab = if code.is_some() { SEALED } else { "a-slow" };
        let base = Record {
            seq: 0,
            ts: "2026-12-01T10:00:00Z".into(),
            event: Event::Start,
            student: student.into(),
            run: run.into(),
            code: code.map(str::to_owned),
            lab: lab.into(),
            answer: None,
            replica: None,
            right: None,
            attempt: 0,
            seconds: 0.0,
            prev: String::new(),
            hash: String::new(),
        };
        let mut records = vec![base.clone()];
        for (i, (answer, right)) in answers.iter().enumerate() {
            let attempt = u32::try_from(i + 1).expect("few");
            records.push(Record {
                ts: format!("2026-12-01T10:0{attempt}:00Z"),
                event: Event::Check,
                answer: Some((*answer).into()),
                right: Some(*right),
                attempt,
                seconds: f64::from(attempt) * 60.0,
                ..base.clone()
            });
        }
        let count = u32::try_from(answers.len()).expect("few");
        records.push(Record {
            ts: "2026-12-01T10:09:00Z".into(),
            event: Event::Stop,
            attempt: count,
            seconds: 540.0,
            ..base
        });
        records
    }

    #[test]
    fn a_chained_file_reads_back_whole() {
        let mut records = run("al", "r1", None, &[("a-down", false), ("a-slow", true)]);
        chain(&mut records);
        let file = read(&text(&records), "al.jsonl");
        assert!(file.breaks.is_empty(), "{:?}", file.breaks);
        assert_eq!(file.records.len(), 4);
        assert_eq!(file.records[3].1.seq, 4);
        assert_eq!(file.records[0].1.prev, GENESIS);
    }

    #[test]
    fn edits_deletions_and_moves_break_the_chain_where_they_are() {
        let mut records = run("al", "r1", None, &[("a-down", false), ("a-slow", true)]);
        chain(&mut records);
        let lines: Vec<String> = records.iter().map(Record::line).collect();
        let breaks = |text: String| read(&text, "f").describe_breaks();

        let edited = lines
            .concat()
            .replace(r#""right":false"#, r#""right":true"#);
        assert_eq!(breaks(edited), ["f:2: edited (its hash is not its own)"]);
        let deleted = [&lines[0], &lines[2], &lines[3]]
            .map(String::as_str)
            .concat();
        let deleted = breaks(deleted);
        assert_eq!(deleted.len(), 1);
        assert!(
            deleted[0].starts_with("f:2: record 3 does not follow"),
            "{deleted:?}"
        );
        let moved = [&lines[0], &lines[2], &lines[1], &lines[3]]
            .map(String::as_str)
            .concat();
        assert_eq!(breaks(moved).len(), 3, "every line out of place");
        let head_cut = lines[1..].concat();
        assert!(breaks(head_cut)[0].starts_with("f:1: record 2 does not follow"));
        let garbage = format!("{}nonsense\n\n{}", lines[0], lines[1]);
        assert_eq!(
            breaks(garbage).len(),
            1,
            "one break, then the chain goes on"
        );
    }

    #[test]
    fn append_continues_the_files_chain() {
        let dir = std::env::temp_dir().join(format!("lab-results-{}", std::process::id()));
        let path = dir.join("results.jsonl");
        let records = run("al", "r1", None, &[("a-slow", true)]);
        for record in records {
            append(&path, record).expect("append");
        }
        let file = read(&std::fs::read_to_string(&path).expect("read"), "r");
        assert!(file.breaks.is_empty(), "{:?}", file.breaks);
        assert_eq!(file.records.len(), 3);
        assert!(
            !path.with_extension("jsonl.lock").exists(),
            "the lock is let go"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
