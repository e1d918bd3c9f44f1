//! System tests: the real `service-a` and `service-b` binaries as separate processes, driven
//! over HTTP. The walkthrough modules follow the lab document step by step.

mod alerts;
mod bad_input;
mod cli;
mod deploy;
mod docs;
mod exemplars;
mod failures;
mod faults;
mod hostile;
mod labs;
mod log_schema;
mod losses;
mod metrics;
mod openapi;
mod otel_contract;
mod otel_env;
mod prometheus;
mod readme;
mod request_id;
mod shutdown;
mod start_script;
mod traces;
mod untrusted_provider;
mod walkthrough_a;
mod walkthrough_b;
