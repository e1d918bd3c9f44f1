//! `lab stop` puts the system back as it was: the traffic has exited when it returns, the
//! faults are cleared, and no user stays throttled by a lab's guesses (A's fault endpoint
//! clears the login throttle with the fault, and B's closes its breaker and empties its
//! retry budget).

use system_tests::labs::{Pair, log_symptom, said, state_dir};

/// The brute-force lab throttles divya; once `lab stop` returns, her right password gets a
/// token again at once, from A and through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_leaves_no_user_throttled() {
    let pair = Pair::start(&[]);
    let dir = state_dir("reset");
    let started = pair.lab(&dir, &["start", "brute-force"]);
    assert!(started.status.success(), "{}", said(&started));
    let (_, throttled) = log_symptom("brute-force");
    pair.a.logs.wait_for(throttled);
    let refused = pair.a.token(system_tests::demo_login(), None).await;
    assert_eq!(refused.status, 429, "divya is throttled: {}", refused.text);

    let stopped = pair.lab(&dir, &["stop"]);
    assert!(stopped.status.success(), "{}", said(&stopped));
    let from_a = pair.a.token(system_tests::demo_login(), None).await;
    assert_eq!(from_a.status, 200, "{}", from_a.text);
    let through_b = pair
        .b
        .protected_action(system_tests::demo_login(), None)
        .await;
    assert_eq!(through_b.status, 200, "{}", through_b.text);
}

/// The a-down lab opens B's breaker; once `lab stop` returns, B's breaker is closed again
/// (B's fault endpoint forgets what the lab's calls taught it) and the next call reaches A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_leaves_no_breaker_open() {
    let pair = Pair::start(&[]);
    let dir = state_dir("reset-breaker");
    let started = pair.lab(&dir, &["start", "a-down"]);
    assert!(started.status.success(), "{}", said(&started));
    pair.b.logs.wait_for(|l| l["event"] == "circuit_opened");

    let stopped = pair.lab(&dir, &["stop"]);
    assert!(stopped.status.success(), "{}", said(&stopped));
    pair.b.logs.wait_for(|l| l["event"] == "circuit_closed");
    let closed = pair
        .b
        .series(r#"provider_circuit_state{state="closed"}"#)
        .await;
    assert_eq!(closed, 1.0, "closed at once, not after B's next call");
    let call = pair
        .b
        .protected_action(system_tests::demo_login(), None)
        .await;
    assert_eq!(call.status, 200, "{}", call.text);
}
