//! Every log line of the walkthrough validates against the checked-in JSON Schema
//! (`deploy/log-line.schema.json`), with PyPI's `jsonschema` (Draft 2020-12). `.ci/run`
//! installs it; elsewhere a missing validator is said, and in CI it fails the test.

use std::process::Command;

use serde_json::{Value, json};
use system_tests::{Service, client, post_json, repo_root, send};

/// The validator, as a small Python program: schema path, then lines path; prints the
/// errors as JSON and exits 1 when there are any.
const VALIDATE: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
errors = []
for number, line in enumerate(open(sys.argv[2]), 1):
    for error in validator.iter_errors(json.loads(line)):
        errors.append({"line": number, "error": error.message})
print(json.dumps(errors))
sys.exit(1 if errors else 0)
"#;

fn validator_available() -> bool {
    system_tests::tools::python_module("jsonschema", "jsonschema")
}

/// Validates `lines` (one JSON object each); returns the errors.
fn validate(lines: &[String]) -> Vec<Value> {
    let path = std::env::temp_dir().join(format!("log-lines-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write lines");
    let output = Command::new("python3")
        .args(["-c", VALIDATE])
        .arg(repo_root().join("deploy/log-line.schema.json"))
        .arg(&path)
        .output()
        .expect("run python3");
    let _ = std::fs::remove_file(&path);
    let errors: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "validator failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    errors.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn every_walkthrough_line_validates_and_a_broken_one_does_not() {
    if !validator_available() {
        return;
    }
    let mut a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    let ok = system_tests::demo_login();
    let url = b.at("/protected-action");
    for body in [
        ok.clone(),
        json!({"username": "divya", "password": "wrong"}),
        system_tests::demo_login_with(json!({"delay_ms": 300})),
        system_tests::demo_login_with(json!({"delay_ms": 2000})),
        json!({"username": "divya"}),
    ] {
        post_json(&url, body, None).await;
    }
    system_tests::get(&a.at("/nope")).await;
    system_tests::get(&b.at("/metrics")).await;
    send(client().post(a.at("/token")).body("not json")).await;
    a.stop();
    post_json(&url, ok, Some("a-down")).await;
    b.logs.request_line("a-down");
    b.sync_logs().await;

    let lines: Vec<String> = a.logs.raw().into_iter().chain(b.logs.raw()).collect();
    assert!(
        lines.len() > 20,
        "the walkthrough wrote {} lines",
        lines.len()
    );
    let errors = validate(&lines);
    assert!(errors.is_empty(), "{errors:#?}");

    let broken = lines
        .iter()
        .find(|l| l.contains(r#""status":200"#))
        .expect("a request line")
        .replace(r#""status":200"#, r#""status":"200""#);
    assert_eq!(validate(&[broken]).len(), 1, "a status as text is caught");
}
