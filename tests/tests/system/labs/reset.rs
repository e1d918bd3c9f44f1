//! `lab stop` puts the system back as it was: the traffic has exited when it returns, the
//! faults are cleared, and no user stays throttled by a lab's guesses (A's fault endpoint
//! clears the login throttle with the fault).

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
