//! The checks that drive external tools: promtool, amtool, a real Prometheus, docker-compose,
//! kubectl, wrk, and Python validators and a fuzzer from PyPI (`.ci/run` installs them all).
//! Without a tool a check says `SKIPPED …` and passes, except in CI (`CI=true`), where it
//! fails (`system_tests::tools`). The black-box behaviour tests, which need only the
//! service binaries, are the `system` target.

mod alerts;
mod deploy;
mod exemplars;
mod labs;
mod log_schema;
mod metrics;
mod openapi;
mod prometheus;
