//! The API descriptions (`GET /openapi.json`): what each service serves with its default
//! flags is the file committed in `deploy/openapi/`, it is valid OpenAPI 3.1 (PyPI's
//! openapi-spec-validator), and Schemathesis, a fuzzer this project did not write, finds no
//! server error and no answer that breaks the description, with B calling a real A.
//!
//! After changing a route or a body, refresh the committed files with
//! `OPENAPI_WRITE=1 cargo test -p system-tests --test system openapi::`.

use std::process::Command;

use serde_json::Value;
use system_tests::{Service, get, repo_root, tools};

fn committed_path(service: &str) -> std::path::PathBuf {
    repo_root().join(format!("deploy/openapi/{service}.json"))
}

#[tokio::test]
async fn the_served_descriptions_are_the_committed_ones() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    for (name, service) in [("service-a", &a), ("service-b", &b)] {
        let served = get(&service.at("/openapi.json")).await;
        assert_eq!(served.status, 200);
        assert_eq!(served.header("content-type"), "application/json");
        assert_eq!(served.json["openapi"], "3.1.0");
        let path = committed_path(name);
        if std::env::var("OPENAPI_WRITE").as_deref() == Ok("1") {
            let text = serde_json::to_string_pretty(&served.json).expect("JSON") + "\n";
            std::fs::write(&path, text).expect("write the description");
        }
        let committed: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .expect("the committed description is JSON");
        assert!(
            committed == served.json,
            "{} differs from what {name} serves: refresh it with OPENAPI_WRITE=1 (see this file's docs)",
            path.display()
        );
    }
}

#[test]
fn the_committed_descriptions_are_valid_openapi_3_1() {
    if !tools::python_module("openapi_spec_validator", "openapi-spec-validator") {
        return;
    }
    const VALIDATE: &str = "import sys\n\
from openapi_spec_validator import validate\n\
from openapi_spec_validator.readers import read_from_filename\n\
for path in sys.argv[1:]:\n    spec, _ = read_from_filename(path)\n    validate(spec)\n";
    let output = Command::new("python3")
        .args(["-c", VALIDATE])
        .arg(committed_path("service-a"))
        .arg(committed_path("service-b"))
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Schemathesis against `service`'s own description: its stateless checks on a bounded
/// number of generated cases per operation, with a fixed seed.
fn fuzz(service: &Service) -> String {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            "run",
        ])
        .arg(service.at("/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
            "--max-examples",
            "30",
            "--seed",
            "20261130",
            "--request-timeout",
            "5",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run schemathesis");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{said}"
    );
    // Not a failed check, but a description that does not say what the service accepts.
    assert!(!said.contains("Schema validation mismatch"), "{said}");
    said
}

#[test]
fn schemathesis_finds_nothing_in_either_service() {
    if !tools::python_module("schemathesis", "schemathesis") {
        return;
    }
    // A short ceiling for delay_ms keeps every generated call well inside B's 1 s timeout:
    // the fuzzer is here to find mistakes, not to wait for the lab's deliberate 503s.
    let a = Service::a(&["--max-delay-ms", "200"]);
    let b = Service::b(&a.url(), &["--max-delay-ms", "200"]);
    for service in [&a, &b] {
        let said = fuzz(service);
        assert!(said.contains("No issues found"), "{said}");
    }
    // B's calls reached the real A.
    let attempts = b.logs.all();
    assert!(
        a.logs.all().iter().any(|l| l["endpoint"] == "POST /token")
            && attempts
                .iter()
                .any(|l| l["endpoint"] == "POST /protected-action"),
        "the fuzzer's calls to B reached A"
    );
}
