//! Where `lab` keeps its files: per user, never one fixed path in /tmp that every user of
//! the machine shares. `$XDG_STATE_HOME/first-distributed-system/` (by default
//! `~/.local/state/first-distributed-system/`), created readable by its owner only:
//! `lab.json` (the running lab), `results.jsonl` (every start, check and stop), `spans.jsonl`
//! (what `lab collect` received, for `lab trace`), and `services.env` (where the services
//! `./deploy/run-local.sh` started listen, while it runs).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory's name under `$XDG_STATE_HOME`.
pub const APP: &str = "first-distributed-system";

/// The running lab.
pub const STATE_FILE: &str = "lab.json";
/// One line per `lab start`, `lab check` and `lab stop`.
pub const RESULTS_FILE: &str = "results.jsonl";
/// One line per span received by `lab collect`.
pub const SPANS_FILE: &str = "spans.jsonl";
/// Where `./deploy/run-local.sh` says, while it runs, where the services it started are.
pub const SERVICES_FILE: &str = "services.env";

/// The per-user state directory: `$XDG_STATE_HOME/first-distributed-system`, or
/// `$HOME/.local/state/first-distributed-system` (the XDG default) when that is not set.
pub fn default_dir() -> Result<PathBuf, String> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return Ok(state.join(APP));
    }
    absolute("HOME")
        .map(|home| home.join(".local/state").join(APP))
        .ok_or_else(|| {
            "no per-user directory for the lab's files: set XDG_STATE_HOME or HOME, or pass --state-dir"
                .to_owned()
        })
}

/// Creates `dir` (and its parents) if needed; a directory this creates is its owner's only.
pub fn ensure_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

fn options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Appends `bytes` to `path` in one write (lines from two writers never interleave), creating
/// the file, readable by its owner only, and its directory if needed.
pub fn append(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    options()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces `path` with `bytes` (written beside it, then renamed, so a reader never sees half
/// a file), readable by its owner only.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let partial = path.with_extension("partial");
    options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&partial)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A lock file left by a `lab` that was killed is taken over after this long.
const STALE_AFTER: Duration = Duration::from_secs(10);

/// A lock on a file that several `lab` commands may append to: `<file>.lock`, created only if
/// absent, removed when dropped. A file beside which no lock can be made (in a directory not
/// ours) goes unlocked.
#[derive(Debug)]
pub struct Lock(Option<PathBuf>);

impl Lock {
    /// Takes the lock of `file`, waiting (up to 5 s) while another `lab` holds it.
    pub fn take(file: &Path) -> Result<Self, String> {
        let mut name = file.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        if let Some(dir) = path.parent() {
            ensure_dir(dir)?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match options().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(Self(Some(path))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > STALE_AFTER));
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    } else if Instant::now() >= deadline {
                        return Err(format!(
                            "{} is held by another lab command (remove it if none is running)",
                            path.display()
                        ));
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Err(_) => return Ok(Self(None)),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_their_owners_only() {
        let dir = std::env::temp_dir().join(format!("lab-paths-{}", std::process::id()));
        let file = dir.join("inner").join("x.jsonl");
        append(&file, b"one\n").expect("append");
        append(&file, b"two\n").expect("append");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "one\ntwo\n");
        replace(&file, b"three\n").expect("replace");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "three\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&file), 0o600);
            assert_eq!(mode(&dir.join("inner")), 0o700);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
