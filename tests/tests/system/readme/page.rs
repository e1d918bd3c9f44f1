//! Reading the pages: which sections are replayed, their steps, and the curls they show.

use std::fmt;

use system_tests::repo_root;

/// The comment that marks a section as replayed.
pub(super) const REPLAY_SECTION: &str = "<!-- replay: this section -->";

/// A place in a page: its path from the repository's root, and a line number.
#[derive(Debug, Clone)]
pub(super) struct At {
    pub(super) file: String,
    pub(super) line: usize,
}

impl At {
    pub(super) fn plus(&self, n: usize) -> Self {
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
pub(super) struct Section {
    pub(super) at: At,
    pub(super) title: String,
    pub(super) lines: std::ops::Range<usize>,
}

/// The replayed sections of one page.
pub(super) fn replayed_sections(file: &str, text: &str) -> Vec<Section> {
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
pub(super) enum Step {
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
pub(super) fn steps(text: &str, section: &Section) -> Vec<Step> {
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
pub(super) fn split_command(block: &[String], at: &At) -> (String, Vec<String>) {
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
pub(super) fn words(command: &str) -> Vec<String> {
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
pub(super) struct Curl {
    pub(super) method: String,
    pub(super) url: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Option<String>,
    /// `-i`: the status line and headers are shown.
    pub(super) include: bool,
    /// `| python3 -m json.tool`: the body is shown pretty-printed.
    pub(super) json_tool: bool,
    /// `| grep -i <word>`: only the lines with `word` in them (any case) are shown.
    pub(super) grep: Option<String>,
}

pub(super) fn parse_curl(command: &str, at: &At) -> Curl {
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
