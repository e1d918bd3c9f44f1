//! Where `lab` finds the services: each address from its flag (or the flag's `LAB_*`
//! variable), else from `services.env`, which `./deploy/run-local.sh` writes in the state
//! directory while it runs (and removes when it stops), else the start command's default.
//! So `PORT_BASE=23000 ./deploy/run-local.sh` moves every port, and `lab` follows it with no
//! setting of its own.
//!
//! `services.env` holds `LAB_*=value` lines, the same names as the flags' variables:
//! `LAB_B_URL`, `LAB_A_FAULTS` (comma-separated: one fault endpoint per replica of A),
//! `LAB_B_FAULTS` and `LAB_PROMETHEUS`. Lines starting with `#` are comments.

use std::path::{Path, PathBuf};

/// One address `lab` uses, and where it came from (what an error names, so a student knows
/// what to change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value.
    pub value: String,
    /// Where it came from.
    pub from: From,
}

/// Where a [`Setting`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// The flag, or its environment variable.
    Flag,
    /// `services.env`, at this path.
    File(PathBuf),
    /// The start command's default.
    Default,
}

/// The services' addresses.
#[derive(Debug, Clone)]
pub struct Services {
    /// B's URL.
    pub b: Setting,
    /// A's fault endpoints (one per replica of A), comma-separated.
    pub a_faults: Setting,
    /// B's fault endpoint.
    pub b_faults: Setting,
    /// The Prometheus `lab check` and `lab start` read.
    pub prometheus: Setting,
}

/// The start command's addresses, when nothing else says.
pub const DEFAULTS: [(&str, &str); 4] = [
    ("LAB_B_URL", "http://127.0.0.1:8081"),
    ("LAB_A_FAULTS", "http://127.0.0.1:9180/faults"),
    ("LAB_B_FAULTS", "http://127.0.0.1:9181/faults"),
    ("LAB_PROMETHEUS", "http://127.0.0.1:9090"),
];

impl Services {
    /// Each address from `flags` (by variable name: what the flag or its variable gave),
    /// else from `services.env` in `state_dir`, else the default.
    pub fn resolve(flags: [Option<&str>; 4], state_dir: Option<&Path>) -> Self {
        let file = state_dir.map(|dir| dir.join(crate::paths::SERVICES_FILE));
        let written = file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|text| parse(&text))
            .unwrap_or_default();
        let [b, a_faults, b_faults, prometheus] = std::array::from_fn(|i| {
            let (name, default) = DEFAULTS[i];
            if let Some(value) = flags[i] {
                return Setting {
                    value: value.to_owned(),
                    from: From::Flag,
                };
            }
            match written.iter().find(|(k, _)| k == name) {
                Some((_, value)) => Setting {
                    value: value.clone(),
                    from: From::File(file.clone().unwrap_or_default()),
                },
                None => Setting {
                    value: default.to_owned(),
                    from: From::Default,
                },
            }
        });
        Self {
            b,
            a_faults,
            b_faults,
            prometheus,
        }
    }
}

impl Setting {
    /// Where it came from, for an error: `flag` and `variable` are the setting's names.
    pub fn source(&self, flag: &str, variable: &str) -> String {
        match &self.from {
            From::Flag => format!("given by {flag} or {variable}"),
            From::File(path) => format!(
                "read from {}, which ./deploy/run-local.sh writes while it runs (is it still running?)",
                path.display()
            ),
            From::Default => format!(
                "the default (no {flag}, no {variable}, and no services.env from ./deploy/run-local.sh)"
            ),
        }
    }

    /// The values of a comma-separated setting.
    pub fn list(&self) -> Vec<&str> {
        self.value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// The `NAME=value` lines of a `services.env`.
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, v)| DEFAULTS.iter().any(|(name, _)| name == k) && !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let dir = std::env::temp_dir().join(format!("lab-services-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join(crate::paths::SERVICES_FILE),
            "# written by run-local.sh\nLAB_B_URL=http://127.0.0.1:23001\n\
             LAB_A_FAULTS=http://127.0.0.1:23005/faults,http://127.0.0.1:23011/faults\nNOT_OURS=x\n",
        )
        .expect("write");
        let found = Services::resolve(
            [None, None, Some("http://127.0.0.1:1/faults"), None],
            Some(&dir),
        );
        assert_eq!(found.b.value, "http://127.0.0.1:23001");
        assert!(matches!(found.b.from, From::File(_)));
        assert_eq!(found.a_faults.list().len(), 2, "one per replica of A");
        assert_eq!(found.b_faults.from, From::Flag);
        assert_eq!(found.prometheus.value, "http://127.0.0.1:9090");
        assert_eq!(found.prometheus.from, From::Default);
        assert!(
            found
                .a_faults
                .source("--a-faults", "LAB_A_FAULTS")
                .contains("services.env")
        );
        let nothing = Services::resolve([None; 4], None);
        assert_eq!(nothing.a_faults.value, "http://127.0.0.1:9180/faults");
        let _ = std::fs::remove_dir_all(dir);
    }
}
