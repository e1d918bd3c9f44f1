//! B's circuit breaker and retry budget judge A by B's own calls only: no field or header a
//! caller sends (`delay_ms`, `x-request-timeout-ms`) can open the breaker or spend the
//! retries others need, and a half-failing A never looks dead. Each test attacks with what
//! any caller may send, without a password, and measures what a legitimate user gets.

use std::time::Duration;

use serde_json::{Value, json};
use system_tests::{Service, TIMEOUT, client, eventually, load, post_json, send};

/// B's JSON `/metrics` value at `key`.
async fn b_metric(b: &Service, key: &str) -> Value {
    system_tests::get(&b.at("/metrics")).await.json[key].clone()
}

#[tokio::test]
async fn timeouts_a_caller_asks_for_do_not_open_the_breaker() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    let url = b.at("/protected-action");
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..2 {
                    let reply = post_json(
                        &url,
                        system_tests::demo_login_with(json!({"delay_ms": 2000})),
                        None,
                    )
                    .await;
                    assert_eq!(reply.status, 503, "{}", reply.text);
                    assert_eq!(
                        reply.json["details"], "timed out after 1s on both attempts",
                        "answered exactly as the seed shows"
                    );
                }
            })
        })
        .collect();
    // A valid user is served all the while the slow callers time out.
    eventually("the slow callers to finish")
        .every(Duration::from_millis(200))
        .until_async(async || {
            let reply = post_json(&url, system_tests::demo_login(), None).await;
            assert_eq!(reply.status, 200, "a valid user is served: {}", reply.text);
            slow.iter().all(|task| task.is_finished())
        })
        .await;
    for task in slow {
        task.await.expect("slow caller");
    }
    assert_eq!(b_metric(&b, "circuit_transitions").await["open"], 0);
}

#[tokio::test]
async fn the_breaker_never_makes_a_half_failing_provider_look_dead() {
    let a = Service::a(&["--failure-rate", "0.5"]);
    let with_breaker = Service::b(&a.url(), &[]);
    // The short version: the `heavy` target's compares 3,000 calls with and without it.
    let on = load::success_rate(&with_breaker, 400, 32).await;
    assert!(on > 0.4, "half of A's answers are good: {on:.3}");
    assert_eq!(
        b_metric(&with_breaker, "circuit_transitions").await["open"],
        0
    );
}

/// A legitimate user's calls to B, one every 50 ms until `attack` has finished: the share
/// answered 200, and how many calls were made.
async fn served_during(b: &Service, attack: tokio::task::JoinSet<()>) -> (f64, usize) {
    let mut attack = attack;
    let url = b.at("/protected-action");
    let (mut calls, mut ok) = (0, 0);
    eventually("the attack to finish")
        .within(4 * TIMEOUT)
        .every(Duration::from_millis(50))
        .until_async(async || {
            if post_json(&url, system_tests::demo_login(), None)
                .await
                .status
                == 200
            {
                ok += 1;
            }
            calls += 1;
            while attack.try_join_next().is_some() {}
            attack.is_empty()
        })
        .await;
    (ok as f64 / calls.max(1) as f64, calls)
}

#[tokio::test]
async fn slowness_any_caller_asks_for_never_opens_the_breaker_for_others() {
    // A answers everything 30 ms late: a delay of 999 ms, just under B's 1 s timeout, times
    // out every time, like the slowness a sick A would show.
    let a = Service::a(&["--extra-latency-ms", "30"]);
    let b = Service::b(&a.url(), &[]);
    let url = b.at("/protected-action");
    let mut attack = tokio::task::JoinSet::new();
    for n in 0..100 {
        let url = url.clone();
        attack.spawn(async move {
            // One call each (about 2 s: two timed-out attempts) is attack enough: a breaker
            // that heard them would open on the fifth.
            // No password needed: made-up users, half asking A to wait, half saying
            // they will wait only 5 ms.
            let body = json!({"username": format!("nobody-{n}"), "password": "x"});
            let request = if n % 2 == 0 {
                let mut body = body;
                body["delay_ms"] = json!(999);
                client().post(&url).json(&body)
            } else {
                client()
                    .post(&url)
                    .header("x-request-timeout-ms", "5")
                    .json(&body)
            };
            let reply = send(request).await;
            let expected = if n % 2 == 0 { 503 } else { 504 };
            assert_eq!(reply.status, expected, "{}", reply.text);
        });
    }
    let (served, calls) = served_during(&b, attack).await;
    assert!(
        calls >= 20,
        "the user called {calls} times during the attack"
    );
    assert!(served >= 0.95, "the user was served {:.0}%", served * 100.0);
    assert_eq!(b_metric(&b, "circuit_transitions").await["open"], 0);
}

#[tokio::test]
async fn a_callers_deadline_shortens_the_call_and_is_answered_504() {
    let a = Service::a(&[]);
    let b = Service::b(&a.url(), &[]);
    let reply = send(
        client()
            .post(b.at("/protected-action"))
            .header("x-request-timeout-ms", "300")
            .header("x-request-id", "in-a-hurry")
            .json(&system_tests::demo_login_with(json!({"delay_ms": 2000}))),
    )
    .await;
    assert_eq!(reply.status, 504, "{}", reply.text);
    assert_eq!(reply.json["error"], "deadline exceeded");
    assert_eq!(
        reply.json["details"],
        "timed out after 300ms on the only attempt; gave up at the 300ms deadline"
    );
    let gave_up = b
        .logs
        .wait_for(|l| l["event"] == "provider_gave_up" && l["request_id"] == "in-a-hurry");
    assert_eq!(gave_up["reason"], "deadline_exceeded");
    // Not an outage: B's count of calls that found A unavailable stays at 0.
    assert_eq!(b_metric(&b, "provider_failures").await, 0);
    assert_eq!(b_metric(&b, "deadline_exceeded").await, 1);
    // A deadline longer than B's own changes nothing: the seed's answer, as the README shows.
    let patient = send(
        client()
            .post(b.at("/protected-action"))
            .header("x-request-timeout-ms", "60000")
            .json(&system_tests::demo_login_with(json!({"delay_ms": 2000}))),
    )
    .await;
    assert_eq!(patient.status, 503, "{}", patient.text);
    assert_eq!(
        patient.json["details"],
        "timed out after 1s on both attempts"
    );
}
