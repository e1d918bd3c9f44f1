//! The committed API descriptions (`deploy/openapi/`, which the `system` target checks the
//! services serve) are valid OpenAPI 3.1 (PyPI's openapi-spec-validator), and Schemathesis,
//! a fuzzer this project did not write, finds no server error and no answer that breaks the
//! description, with B calling a real A.

use std::process::Command;

use system_tests::{Service, committed_openapi, tools};

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
        .arg(committed_openapi("service-a"))
        .arg(committed_openapi("service-b"))
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
