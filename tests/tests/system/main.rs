//! System tests: `service-a` and `service-b` driven over HTTP. A test that reads nothing but
//! the answers (status, headers, body) starts them inside the test process on port 0
//! (`system_tests::InProcess`: `in_process`, and the tests each module's doc names); a test
//! that reads a log line, a `/metrics` value, a span, stdout or `/proc`, sends a signal or
//! sets an environment variable the binary reads at start runs the real binaries as separate
//! processes. The walkthrough modules follow the lab document step by step. They need nothing
//! but the workspace; the checks that drive external tools (promtool, Prometheus,
//! docker-compose, kubectl, Python validators) are the `tools` target.

mod bad_input;
mod breaker;
mod cli;
mod crowding;
mod deploy;
mod docs;
mod failures;
mod faults;
mod fleet;
mod hostile;
mod in_process;
mod labs;
mod layout;
mod login_throttle;
mod losses;
mod metrics;
mod metrics_doc;
mod openapi;
mod otel_caller_headers;
mod otel_contract;
mod otel_env;
mod otel_export;
mod otel_logs;
mod otel_redaction;
mod otel_resource;
mod readme;
mod request_id;
mod shutdown;
mod shutdown_losses;
mod start_script;
mod traces;
mod untrusted_provider;
mod walkthrough_a;
mod walkthrough_b;
