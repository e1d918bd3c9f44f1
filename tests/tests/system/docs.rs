//! The pages (README.md and docs/*.md) cannot rot: every relative link leads to a file or
//! folder of this repository, and every `#anchor` to a heading of the page it names; the
//! README's contents list names every page in docs/; and the configuration page lists
//! every flag and environment variable the services take, and no other. (What the pages
//! show the services printing is replayed by `readme`.)

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::readme::{heading_level, in_code, pages};
use system_tests::{Kind, binary, repo_root};

/// One link in a page: its line and its target, as written.
#[derive(Debug)]
struct Link {
    line: usize,
    target: String,
}

/// `text` with the lines of fenced code blocks emptied (line numbers kept).
fn prose(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let code = in_code(&lines);
    lines
        .iter()
        .zip(code)
        .map(|(line, code)| if code { "" } else { *line })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The inline links (`[text](target)`) of a page, outside code blocks and code spans.
fn links(text: &str) -> Vec<Link> {
    let text = prose(text);
    let chars: Vec<char> = text.chars().collect();
    let mut links = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '`' {
            // A code span: a run of backticks up to the next run as long; a run with no
            // partner is literal.
            let run = chars[i..].iter().take_while(|c| **c == '`').count();
            let mut j = i + run;
            let mut close = None;
            while j < chars.len() {
                if chars[j] == '`' {
                    let other = chars[j..].iter().take_while(|c| **c == '`').count();
                    if other == run {
                        close = Some(j + other);
                        break;
                    }
                    j += other;
                } else {
                    j += 1;
                }
            }
            i = close.unwrap_or(i + run);
            continue;
        }
        if chars[i] == ']' && chars.get(i + 1) == Some(&'(') {
            let start = i + 2;
            let end = chars[start..]
                .iter()
                .position(|c| *c == ')' || c.is_whitespace())
                .map_or(chars.len(), |n| start + n);
            let line = chars[..i].iter().filter(|c| **c == '\n').count() + 1;
            links.push(Link {
                line,
                target: chars[start..end].iter().collect(),
            });
            i = end;
            continue;
        }
        i += 1;
    }
    links
}

/// GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings, with GitHub's `-1`, `-2` for repeated ones.
fn anchors(text: &str) -> HashSet<String> {
    let lines: Vec<&str> = text.lines().collect();
    let code = in_code(&lines);
    let mut anchors = HashSet::new();
    for (line, code) in lines.iter().zip(code) {
        if code {
            continue;
        }
        if let Some(level) = heading_level(line) {
            let base = slug(&line[level..]);
            let mut anchor = base.clone();
            let mut n = 0;
            while anchors.contains(&anchor) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
            anchors.insert(anchor);
        }
    }
    anchors
}

/// `path` (relative to the repository's root) with `.` and `..` resolved; None when it
/// would leave the repository.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

#[test]
fn every_relative_link_leads_somewhere() {
    let root = repo_root();
    let mut checked = 0;
    for (file, text) in pages() {
        let dir = Path::new(&file).parent().unwrap_or(Path::new(""));
        for link in links(&text) {
            let at = format!("{file}:{}: ({})", link.line, link.target);
            if link.target.contains("://") || link.target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match link.target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.target.as_str(), None),
            };
            assert!(!path.starts_with('/'), "{at}: a link is relative");
            let target = if path.is_empty() {
                PathBuf::from(&file)
            } else {
                normalise(&dir.join(path))
                    .unwrap_or_else(|| panic!("{at}: leads out of the repository"))
            };
            assert!(root.join(&target).exists(), "{at}: no such file or folder");
            if let Some(anchor) = anchor {
                assert!(
                    target.extension().is_some_and(|e| e == "md"),
                    "{at}: an anchor into a page that is not Markdown"
                );
                let page = std::fs::read_to_string(root.join(&target)).expect("the page");
                let known = anchors(&page);
                assert!(
                    known.contains(anchor),
                    "{at}: no heading there has this anchor; its headings' anchors: {known:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser blind?"
    );
}

/// The README's contents list leads to every page in docs/.
#[test]
fn the_readme_lists_every_page() {
    let pages = pages();
    let (_, readme) = &pages[0];
    let listed: HashSet<String> = links(readme).into_iter().map(|link| link.target).collect();
    for (file, _) in &pages[1..] {
        assert!(
            listed.contains(file.as_str()),
            "README.md does not link to {file}"
        );
    }
}

/// docs/configuration.md's table of the services' settings against what each binary's
/// `--help` lists: every flag there, with its variable, and nothing that is not.
#[test]
fn the_configuration_page_lists_every_flag() {
    let page = std::fs::read_to_string(repo_root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    // | service | flag | env | default | meaning |
    let rows: Vec<Vec<String>> = page
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("| `--"))
        .map(|l| {
            l.split(" | ")
                .map(|cell| cell.trim_matches(|c| c == '|' || c == ' ').to_owned())
                .collect()
        })
        .collect();
    assert!(rows.len() > 30, "the table's rows: {}", rows.len());
    for (kind, letter) in [(Kind::A, "A"), (Kind::B, "B")] {
        let help = Command::new(binary(kind))
            .arg("--help")
            .output()
            .expect("run --help");
        let help = String::from_utf8_lossy(&help.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mine: Vec<&Vec<String>> = rows
            .iter()
            .filter(|row| row[0] == "both" || row[0].split(", ").any(|s| s == letter))
            .collect();
        for row in &mine {
            let flag = row[1].trim_matches('`');
            assert!(
                help.contains(&format!("{flag} ")),
                "{letter}: the page lists {flag}, which --help does not"
            );
            let env = row[2].trim_matches('`');
            if env != "—" {
                assert!(
                    help.contains(&format!("[env: {env}=")),
                    "{letter}: {flag}'s variable is not {env} in --help"
                );
            }
        }
        let listed: HashSet<&str> = mine.iter().map(|row| row[1].trim_matches('`')).collect();
        for word in help.split(' ') {
            let flag = word.trim_end_matches(',');
            if flag.starts_with("--")
                && flag.len() > 2
                && flag[2..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-')
                && !["--help", "--version"].contains(&flag)
            {
                assert!(
                    listed.contains(flag),
                    "{letter}: --help has {flag}, docs/configuration.md does not"
                );
            }
        }
    }
}

/// The configuration page names every `OTEL_*` variable the services honour: the list a
/// service prints when it refuses one it cannot honour (a TLS setting).
#[test]
fn the_configuration_page_lists_every_otel_variable() {
    let page = std::fs::read_to_string(repo_root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let refused = Command::new(binary(Kind::A))
        .args(["--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem")
        .output()
        .expect("run service-a");
    assert!(
        !refused.status.success(),
        "a TLS setting this build cannot honour is refused"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let honoured: Vec<&str> = stderr
        .split("it reads ")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of what it reads: {stderr}"))
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|word| word.starts_with("OTEL_"))
        .collect();
    assert!(honoured.len() > 30, "{honoured:?}");
    for variable in honoured {
        assert!(
            page.contains(&format!("`{variable}`")),
            "docs/configuration.md does not name {variable}"
        );
    }
}

/// The flags of `lab` and `traffic` without an environment variable are exactly the ones
/// docs/configuration.md names as choosing what one command does: every other flag, as
/// `--help` shows it, has its variable.
#[test]
fn the_tools_flags_without_a_variable_are_the_ones_the_page_names() {
    let page = std::fs::read_to_string(repo_root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let named = page
        .split_once("the flags that choose what one command does have none (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list.to_owned())
        .expect("docs/configuration.md names the tools' flags without a variable");
    let helps = [
        (Kind::Lab, vec![]),
        (Kind::Lab, vec!["start"]),
        (Kind::Lab, vec!["check"]),
        (Kind::Lab, vec!["stop"]),
        (Kind::Lab, vec!["key"]),
        (Kind::Lab, vec!["report"]),
        (Kind::Lab, vec!["trace"]),
        (Kind::Lab, vec!["collect"]),
        (Kind::Traffic, vec![]),
    ];
    let mut without = HashSet::new();
    for (kind, command) in helps {
        let help = Command::new(binary(kind))
            .args(&command)
            .arg("--help")
            .output()
            .expect("run --help");
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        // One option's block: from its `--flag` line to the next option's.
        let mut blocks: Vec<(String, String)> = Vec::new();
        for line in help.lines() {
            let trimmed = line.trim_start();
            let flag = trimmed
                .strip_prefix("-")
                .and_then(|_| trimmed.split_whitespace().find(|w| w.starts_with("--")))
                .filter(|_| line.starts_with("  ") && !line.starts_with("            "));
            match flag {
                Some(flag) => blocks.push((flag.trim_end_matches(',').to_owned(), line.to_owned())),
                None => {
                    if let Some((_, text)) = blocks.last_mut() {
                        text.push_str(line);
                    }
                }
            }
        }
        assert!(
            !blocks.is_empty(),
            "{kind:?} {command:?} --help lists no flag"
        );
        for (flag, text) in blocks {
            if ["--help", "--version"].contains(&flag.as_str()) || text.contains("[env:") {
                continue;
            }
            without.insert(flag);
        }
    }
    for flag in &without {
        assert!(
            named.contains(&format!("{flag}`")),
            "{flag} has no environment variable and docs/configuration.md does not say so"
        );
    }
    for word in named.split(['`', ' ', '/', ',']) {
        if word.starts_with("--") {
            assert!(
                without.contains(word),
                "docs/configuration.md says {word} has no variable: --help gives it one, or has no {word}"
            );
        }
    }
}
