//! A password as a type: deserialised and serialised as the plain string it is, but its
//! `Debug` output is `<redacted>` and it has no `Display`, so no log line, span field or
//! error message can show it by accident. Reading it takes [`Password::expose`].

use serde::{Deserialize, Serialize};

/// A password from a request body.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// The password itself, for the one place that checks or forwards it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_reads_and_writes_as_a_string_and_never_shows() {
        let password: Password = serde_json::from_str("\"pass123\"").expect("a string");
        assert_eq!(password.expose(), "pass123");
        assert_eq!(
            serde_json::to_string(&password).expect("json"),
            "\"pass123\""
        );
        assert_eq!(format!("{password:?}"), "<redacted>");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Login {
            username: String,
            password: Password,
        }
        let shown = format!(
            "{:?}",
            Login {
                username: "divya".into(),
                password
            }
        );
        assert!(!shown.contains("pass123"), "{shown}");
    }
}
