//! Load that takes seconds per test: B over a fleet of A's replicas through every phase
//! (healthy, a late one, a slow one, a flaky one, a killed one, the recovered ones' share),
//! a thousand callers on a slow A, and the breaker judged over 3,000 calls to a half-failing
//! A. The `system` target keeps a short version of each.

use std::time::Duration;

use serde_json::Value;
use system_tests::fleet::{Replica, drive, served, shares};
use system_tests::{Service, TIMEOUT, eventually, load, vacant_addr};

/// Workers calling B at once.
const WORKERS: usize = 6;

/// How long each phase drives load.
const PHASE: Duration = Duration::from_secs(4);

/// Waits (bounded) for B's log to show `event` for `endpoint`.
fn wait_for_event(b: &Service, event: &str, endpoint: &str) {
    b.logs
        .wait_for(|l| l["event"] == event && l["endpoint"] == endpoint);
}

/// B's JSON `/metrics` value at `key`.
async fn b_metric(b: &Service, key: &str) -> Value {
    system_tests::get(&b.at("/metrics")).await.json[key].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_shares_attempts_routes_around_bad_replicas_and_gives_recovered_ones_their_share() {
    let a1 = Replica::start("127.0.0.1:0");
    let a2 = Replica::start("127.0.0.1:0");
    let a3 = Replica::start("127.0.0.1:0");
    let late = vacant_addr();
    let list = format!("{},{},{},http://{late}", a1.url(), a2.url(), a3.url());
    let b = Service::b(&list, &[]);

    // 1. Three healthy replicas (the fourth not started yet): a fair share each, no error.
    let ready = [&a1, &a2, &a3];
    let before = served(&ready).await;
    let healthy = drive(&b, WORKERS, PHASE).await;
    let healthy_shares = shares(&before, &served(&ready).await);
    assert_eq!(healthy.failed(), 0, "{:?}", healthy.statuses);
    for share in &healthy_shares {
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.10,
            "within 10 points of fair: {healthy_shares:?}"
        );
    }
    wait_for_event(&b, "endpoint_ejected", &late.to_string());

    // 2. The fourth starts late: it is found by its probe and gets its share.
    let a4 = Replica::start(&late.to_string());
    let all = [&a1, &a2, &a3, &a4];
    let before = served(&all).await;
    let joined = drive(&b, WORKERS, PHASE).await;
    let joined_shares = shares(&before, &served(&all).await);
    assert_eq!(joined.failed(), 0, "{:?}", joined.statuses);
    assert!(
        joined_shares[3] >= 0.15,
        "the late replica's share: {joined_shares:?}"
    );

    // 3. One turns slow, past B's timeout: no caller sees it fail, and p99 stays small.
    a2.slow(1500).await;
    let slow = drive(&b, WORKERS, PHASE).await;
    assert_eq!(slow.failed(), 0, "{:?}", slow.statuses);
    let bound = (healthy.p99() * 5).max(Duration::from_millis(100));
    assert!(
        slow.p99() <= bound,
        "p99 {:?} with a slow replica, {:?} healthy",
        slow.p99(),
        healthy.p99()
    );

    // 4. It recovers; another fails half its calls: still no failure for callers.
    a2.heal().await;
    a3.flaky(0.5).await;
    let flaky = drive(&b, WORKERS, PHASE).await;
    assert_eq!(flaky.failed(), 0, "{:?}", flaky.statuses);

    // 5. That one recovers; a third is killed: no failure, and the recovered ones serve
    //    their share again once back.
    a3.heal().await;
    let mut a1 = a1;
    a1.service.signal("KILL");
    a1.service.wait_exit();
    let killed = drive(&b, WORKERS, PHASE).await;
    assert_eq!(killed.failed(), 0, "{:?}", killed.statuses);
    // A replica that recovered is back within the longest ejection (8 s), then serves its
    // share: calls keep going meanwhile, as the probation after an ejection needs one.
    for replica in [&a2, &a3] {
        let in_use = format!(
            r#"provider_endpoint_state{{endpoint="{}",state="in_use"}}"#,
            replica.service.addr
        );
        eventually(format!("{} to come back", replica.service.addr))
            .within(2 * TIMEOUT)
            .every(Duration::ZERO)
            .until_async(async || {
                let state = b.series(&in_use).await;
                if state >= 1.0 {
                    return Ok(());
                }
                drive(&b, 2, Duration::from_millis(200)).await;
                Err(state)
            })
            .await;
    }
    let alive = [&a2, &a3, &a4];
    let before = served(&alive).await;
    let recovered = drive(&b, WORKERS, PHASE).await;
    let after_shares = shares(&before, &served(&alive).await);
    assert_eq!(recovered.failed(), 0, "{:?}", recovered.statuses);
    for share in &after_shares {
        assert!(
            *share >= 0.15,
            "each live replica serves its share again: {after_shares:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_callers_on_a_slow_a_keep_b_inside_its_memory_limit() {
    load::callers_on_a_slow_a_keep_b_inside_its_memory_limit(1000, Duration::from_secs(6)).await;
}

#[tokio::test]
async fn the_breaker_never_makes_a_half_failing_provider_look_dead() {
    let a = Service::a(&["--failure-rate", "0.5"]);
    let with_breaker = Service::b(&a.url(), &[]);
    let without = Service::b(&a.url(), &["--breaker-threshold", "0"]);
    let on = load::success_rate(&with_breaker, 3000, 32).await;
    let off = load::success_rate(&without, 3000, 32).await;
    assert!(
        (on - off).abs() <= 0.05,
        "success with the breaker {on:.3}, without {off:.3}"
    );
    assert!(on > 0.4, "half of A's answers are good: {on:.3}");
    assert_eq!(
        b_metric(&with_breaker, "circuit_transitions").await["open"],
        0
    );
}
