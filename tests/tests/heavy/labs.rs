//! The labs end to end, each with a real Prometheus and the project's rules: every lab but
//! `a-down` (the `tools` target's), the whole lab without Docker on what
//! `./deploy/run-local.sh --observe` starts (`local`), and the lab of A's replicas on three of
//! them (`replicas`). Each takes 10 to 40 s.

mod local;
mod replicas;

use system_tests::lab_stack::run_lab;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_a_slow() {
    run_lab("a-slow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_a_timeouts() {
    run_lab("a-timeouts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_a_flaky() {
    run_lab("a-flaky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_retry_storm() {
    run_lab("retry-storm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_brute_force() {
    run_lab("brute-force").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_b_misconfigured() {
    run_lab("b-misconfigured").await;
}
