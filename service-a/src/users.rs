//! Who may have a token. Passwords are kept only as SHA-256 digests and compared in constant
//! time; an unknown user is checked against a digest no password has, so "no such user" and
//! "wrong password" take the same path and give the same answer.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

/// The demo account from the lab walkthrough.
pub const DEMO_USER: (&str, &str) = ("divya", "pass123");

type PasswordDigest = [u8; 32];

/// Compared against when the user does not exist. All zeros is not the SHA-256 of anything
/// anyone knows, so it never matches.
const NO_USER: PasswordDigest = [0; 32];

/// The user table. Its `Debug` output lists names only.
#[derive(Clone, Default)]
pub struct Users {
    digests: HashMap<String, PasswordDigest>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.digests.keys()).finish()
    }
}

/// Why a users file was refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("cannot read users file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `username:password` with both parts non-empty.
    #[error("users file {path}, line {line}: expected `username:password`")]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line number (the line itself is not repeated: it holds a password).
        line: usize,
    },
}

impl Users {
    /// Adds or replaces a user.
    pub fn insert(&mut self, username: &str, password: &str) {
        self.digests.insert(username.to_owned(), digest(password));
    }

    /// Reads `username:password` lines from `path`.
    pub fn load_file(&mut self, path: &Path) -> Result<(), UsersError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: shown.clone(),
            source,
        })?;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                    self.insert(user, password);
                }
                _ => {
                    return Err(UsersError::Malformed {
                        path: shown,
                        line: index + 1,
                    });
                }
            }
        }
        Ok(())
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are no users at all.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `password` is `username`'s. Same work whether or not the user exists.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        let (expected, known) = match self.digests.get(username) {
            Some(d) => (d, Choice::from(1)),
            None => (&NO_USER, Choice::from(0)),
        };
        (digest(password).ct_eq(expected) & known).into()
    }
}

fn digest(password: &str) -> PasswordDigest {
    Sha256::digest(password.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Users {
        let mut users = Users::default();
        users.insert(DEMO_USER.0, DEMO_USER.1);
        users
    }

    #[test]
    fn the_demo_password_verifies_and_others_do_not() {
        let users = demo();
        assert!(users.verify("divya", "pass123"));
        assert!(!users.verify("divya", "wrong"));
        assert!(!users.verify("divya", ""));
        assert!(!users.verify("nobody", "pass123"));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let shown = format!("{:?}", demo());
        assert_eq!(shown, r#"{"divya"}"#);
    }

    #[test]
    fn users_file_adds_users_and_names_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good");
        std::fs::write(&good, "# team\nalice:s3cret\n\nbob:pa:ss\n").expect("write");
        let mut users = demo();
        users.load_file(&good).expect("loads");
        assert_eq!(users.len(), 3);
        assert!(
            users.verify("bob", "pa:ss"),
            "only the first colon separates"
        );

        let bad = dir.join("bad");
        std::fs::write(&bad, "alice:ok\nno-colon-here\n").expect("write");
        let err = users.load_file(&bad).expect_err("refused");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(!err.to_string().contains("no-colon-here"));
    }
}
