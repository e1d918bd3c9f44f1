//! A's login throttle against its own users and against guessers: only wrong passwords
//! count, a burst of guesses cannot race past the limit whatever delay it asks for, and a
//! user at the limit is refused before her password is looked at.
//!
//! The two tests that assert only statuses run A inside the test process
//! (`concurrent_guesses_are_counted_before_their_delay`,
//! `a_user_at_her_limit_is_refused_unchecked_and_right_logins_between_clear_nothing`); the
//! other two read A's `/metrics` counts, which only the binary's recorder keeps.

use serde_json::json;
use system_tests::{DEMO_PASSWORD, InProcess, Service, get, post_json};

/// Sends `n` logins for divya at once to A's `/token` at `url`, each asking A for
/// `delay_ms`, with `password(i)`, and returns the statuses in order.
async fn burst(
    url: &str,
    n: usize,
    delay_ms: u64,
    password: impl Fn(usize) -> &'static str,
) -> Vec<u16> {
    let logins: Vec<_> = (0..n)
        .map(|i| {
            let body = json!({"username": "divya", "password": password(i), "delay_ms": delay_ms});
            tokio::spawn(post_json(url, body, None))
        })
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for login in logins {
        statuses.push(login.await.expect("login").status);
    }
    statuses
}

#[tokio::test]
async fn right_passwords_in_flight_never_throttle_their_owner() {
    let a = Service::a(&[]);
    // Five times the limit, all waiting in A at once: none of them is a failure.
    let statuses = burst(&a.at("/token"), 50, 500, |_| DEMO_PASSWORD).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let outcomes =
        system_tests::get(&a.at("/metrics")).await.json["token_requests_by_outcome"].clone();
    assert_eq!(outcomes["issued"], 50, "{outcomes}");
    assert_eq!(outcomes["throttled"], 0, "{outcomes}");
}

#[tokio::test]
async fn concurrent_guesses_are_counted_before_their_delay() {
    let a = InProcess::a(&[]).await;
    let statuses = burst(&a.at("/token"), 200, 1000, |_| "wrong").await;
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        evaluated <= 10,
        "{evaluated} guesses were evaluated: {statuses:?}"
    );
    assert_eq!(evaluated + throttled, 200, "{statuses:?}");
}

#[tokio::test]
async fn a_user_at_her_limit_is_refused_unchecked_and_right_logins_between_clear_nothing() {
    let a = InProcess::a(&[]).await;
    // Wrong and right passwords mixed, all in flight together: the ten wrong ones fill the
    // limit, and the right ones, settled at once, neither count nor clear anything.
    let statuses = burst(&a.at("/token"), 20, 300, |i| {
        if i % 2 == 0 { "wrong" } else { DEMO_PASSWORD }
    })
    .await;
    let wrong: Vec<u16> = statuses.iter().step_by(2).copied().collect();
    assert!(
        wrong.iter().all(|s| *s == 401),
        "ten wrong ones, each checked: {statuses:?}"
    );
    let right = post_json(
        &a.at("/token"),
        json!({"username": "divya", "password": DEMO_PASSWORD}),
        None,
    )
    .await;
    assert_eq!(
        right.status, 429,
        "at the limit, even the right password waits: {}",
        right.text
    );
    assert!(right.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn the_eleventh_wrong_password_is_throttled_for_that_user_only() {
    let dir = std::env::temp_dir().join(format!("throttle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let users = dir.join("users");
    std::fs::write(&users, "alice:wonderland\n").expect("users file");
    let a = Service::a(&["--users-file", users.to_str().expect("path")]);
    let b = Service::b(&a.url(), &[]);
    let wrong = json!({"username": "divya", "password": "guess"});

    for _ in 0..10 {
        assert_eq!(a.token(wrong.clone(), None).await.status, 401);
    }
    let throttled = a.token(wrong, None).await;

    assert_eq!(throttled.status, 429);
    assert!(
        throttled
            .header("retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s > 0)
    );
    assert!(throttled.json["error"].as_str().is_some());
    assert_eq!(
        a.token(system_tests::demo_login(), None).await.status,
        429,
        "even the right password waits"
    );
    let alice = json!({"username": "alice", "password": "wonderland"});
    assert_eq!(
        a.token(alice, None).await.status,
        200,
        "other users are unaffected"
    );
    let through_b = b.protected_action(system_tests::demo_login(), None).await;
    assert_eq!(through_b.status, 429, "B passes the 429 through");
    assert!(!through_b.header("retry-after").is_empty());
    assert_eq!(
        get(&a.at("/metrics")).await.json["token_requests_by_outcome"]["throttled"],
        3
    );
}
