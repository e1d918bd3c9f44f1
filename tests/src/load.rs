//! Loads at any size, for a test that runs small in the `system` target and at full size in
//! the `heavy` one: sprays of made-up methods and paths (they must add no series to
//! `/metrics`) and of made-up long usernames with wrong passwords (they must neither free an
//! attacker from the login throttle nor grow the process), callers on a slow A (B stays
//! within its memory limit), and calls counted by their answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::attack::{
    HEALTHY_LATENCY, MEMORY_LIMIT, assert_unharmed, made_up_method, wait_under_way,
};
use crate::{DEMO_PASSWORD, Service, client, demo_login, get, post_json, send};

/// Share of `n` calls to B's `/protected-action` (the demo login), `concurrency` at a time,
/// answered 200.
pub async fn success_rate(b: &Service, n: usize, concurrency: usize) -> f64 {
    let url = b.at("/protected-action");
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let url = url.clone();
        tasks.spawn(async move {
            let mut ok = 0;
            for _ in (worker..n).step_by(concurrency) {
                if post_json(&url, demo_login(), None).await.status == 200 {
                    ok += 1;
                }
            }
            ok
        });
    }
    let ok: usize = tasks.join_all().await.into_iter().sum();
    ok as f64 / n as f64
}

/// `callers` callers of B at once for `during`, against an A that answers in 900 ms: B's
/// places for requests in flight all hold a call to A, the rest is shed. B's peak memory
/// stays under the limit, and B lives.
pub async fn callers_on_a_slow_a_keep_b_inside_its_memory_limit(callers: usize, during: Duration) {
    // Every caller logs in as the demo user at once: A's brute-force protection is not what
    // this tests.
    let a = Service::a(&["--extra-latency-ms", "900", "--max-login-failures", "0"]);
    let mut b = Service::b(&a.url(), &[]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(callers)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = b.at("/protected-action");
    let until = Instant::now() + during;
    let answered = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, url, answered) = (client.clone(), url.clone(), answered.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let sent = client.post(&url).json(&demo_login()).send().await;
                    if let Ok(reply) = sent {
                        let status = reply.status().as_u16();
                        let _ = reply.bytes().await;
                        assert!(matches!(status, 200 | 503), "{status}");
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    assert!(answered.load(Ordering::Relaxed) > callers, "the load ran");
    let peak = b.peak_memory();
    assert!(
        peak < MEMORY_LIMIT,
        "B's peak memory {} MiB is over the 64 MiB limit",
        peak / (1024 * 1024)
    );
    assert!(b.is_alive());
}

/// Sends `count` requests with made-up methods to A, half on made-up paths, 16 at a time;
/// asserts the series on `/metrics` stay as they were, `/health` answers promptly during the
/// spray, and the process is unharmed.
pub async fn made_up_methods_and_paths_add_no_series(count: u32) {
    let mut a = Service::a(&[]);
    let http = client();
    let answered = Arc::new(AtomicUsize::new(0));
    let spray = |from: u32, to: u32| {
        let (http, answered) = (http.clone(), answered.clone());
        let base = a.url();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..16 {
                let (http, base, answered) = (http.clone(), base.clone(), answered.clone());
                tasks.spawn(async move {
                    for n in (from + worker..to).step_by(16) {
                        let path = if n % 2 == 0 {
                            "/token".to_owned()
                        } else {
                            format!("/r{n}")
                        };
                        let reply =
                            send(http.request(made_up_method(n), format!("{base}{path}"))).await;
                        assert!(matches!(reply.status, 404 | 405), "{}", reply.text);
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            tasks.join_all().await;
        }
    };
    spray(0, 200).await;
    // Every route's own series exist before the baseline is read.
    a.health_latency().await;
    get(&a.at("/metrics?format=prometheus")).await;
    let before = get(&a.at("/metrics?format=prometheus")).await.text;

    let attack = tokio::spawn(spray(200, 200 + count));
    wait_under_way(&answered, 200 + (count as usize / 20)).await;
    let during = a.health_latency().await;
    attack.await.expect("spray");

    let after = get(&a.at("/metrics?format=prometheus")).await.text;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        series(&after),
        series(&before),
        "{count} more methods and paths added series"
    );
    assert!(
        after.len() < before.len() + 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(after.contains(r#"method="_OTHER""#), "{after}");
    assert!(!after.contains("M1X"), "a made-up method became a label");
    assert!(
        during < HEALTHY_LATENCY,
        "/health took {during:?} during the spray"
    );
    assert_unharmed(&mut a, &format!("{count} made-up methods")).await;
}

/// Length of each sprayed name.
pub const SPRAYED_NAME_LENGTH: usize = 1_024;

/// Sends `names` made-up usernames of [`SPRAYED_NAME_LENGTH`] bytes with a wrong password to
/// A, each once, 16 at a time; asserts `/health` answers promptly during the spray, that the
/// demo user still gets at most 10 wrong guesses checked and then 429 even with her right
/// password, and that the process is unharmed.
pub async fn long_usernames_neither_free_an_attacker_nor_grow_memory(names: usize) {
    let mut a = Service::a(&[]);
    let url = a.at("/token");
    let http = client();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 16;
    for worker in 0..workers {
        let (http, url, answered) = (http.clone(), url.clone(), answered.clone());
        tasks.spawn(async move {
            let padding = "u".repeat(SPRAYED_NAME_LENGTH - 8);
            for n in (worker..names).step_by(workers) {
                let body = json!({"username": format!("{n:08}{padding}"), "password": "guess"});
                let reply = send(http.post(&url).json(&body)).await;
                // 429 when both of a name's counters are shared with names already at the
                // limit: the throttle errs on the side of refusing.
                assert!(matches!(reply.status, 401 | 429), "{}", reply.text);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    wait_under_way(&answered, (names / 200).max(100)).await;
    let during = a.health_latency().await;
    tasks.join_all().await;
    assert!(
        during < HEALTHY_LATENCY,
        "/health took {during:?} during the spray"
    );

    let mut evaluated = 0;
    for _ in 0..30 {
        let reply = post_json(
            &url,
            json!({"username": "divya", "password": "wrong"}),
            None,
        )
        .await;
        match reply.status {
            401 => evaluated += 1,
            429 => {}
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert!(evaluated <= 10, "{evaluated} wrong guesses were checked");
    let right = post_json(
        &url,
        json!({"username": "divya", "password": DEMO_PASSWORD}),
        None,
    )
    .await;
    assert_eq!(
        right.status, 429,
        "the right password after the limit is still refused: {}",
        right.text
    );
    assert_unharmed(&mut a, &format!("{names} usernames of 1 KiB")).await;
}
