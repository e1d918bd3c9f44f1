//! B's call to A, in process, against a stub provider: every way an attempt can end and
//! every reason B stops, each with the answer, the attempts made and the 503's `details`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser as _;
use service_b::config::Config;
use service_b::outcome::{AttemptOutcome, StopReason};
use service_b::provider::{Provider, ProviderError, TokenRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the stub does with each request it reads.
#[derive(Debug, Clone, Copy)]
enum Stub {
    /// Answers this raw response (and closes the connection).
    Reply(&'static str),
    /// Reads the request and never answers.
    Hang,
    /// Answers this head and part of a body, waits, then sends the rest (or, with no rest,
    /// closes the connection mid-body).
    Stalled {
        head_and_start: &'static str,
        pause: Duration,
        rest: Option<&'static str>,
    },
    /// Answers a 200 whose chunked body never ends.
    Endless,
}

const TOKEN: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 38\r\nconnection: close\r\n\r\n{\"token\":\"token-divya\",\"user\":\"divya\"}";
const UNAUTHORIZED: &str = "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 32\r\nconnection: close\r\n\r\n{\"error\":\"invalid credentials\"}\n";
const UNAVAILABLE: &str =
    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const NOT_HTTP: &str = "SMTP 220 hello, this is not HTTP\r\n\r\n";

/// Starts the stub; returns its URL and the number of requests it has read.
async fn stub(behaviour: Stub) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut read = 0;
                // The head and the small JSON body arrive together on loopback.
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    Stub::Reply(raw) => {
                        let _ = stream.write_all(raw.as_bytes()).await;
                    }
                    Stub::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    Stub::Stalled {
                        head_and_start,
                        pause,
                        rest,
                    } => {
                        let _ = stream.write_all(head_and_start.as_bytes()).await;
                        tokio::time::sleep(pause).await;
                        if let Some(rest) = rest {
                            let _ = stream.write_all(rest.as_bytes()).await;
                        }
                    }
                    Stub::Endless => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                        if stream.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
                        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                }
            });
        }
    });
    (url, seen)
}

async fn provider(url: &str, flags: &[&str]) -> Provider {
    let mut args = vec!["service-b", "--provider-url", url];
    args.extend_from_slice(flags);
    let observe = telemetry::observe::Settings::in_process();
    let metrics = std::sync::Arc::new(service_b::metrics::ProviderMetrics::register(
        observe.metrics(),
    ));
    Provider::start(
        &Config::try_parse_from(args).expect("flags").provider,
        &observe,
        metrics,
    )
    .await
    .expect("client")
}

async fn call(provider: &Provider, delay_ms: Option<u64>) -> Result<String, ProviderError> {
    let password = serde_json::from_str("\"pass123\"").expect("password");
    provider
        .issue_token(
            &TokenRequest {
                username: "divya",
                password: &password,
                delay_ms,
            },
            &telemetry::RequestId("provider-test".into()),
            None,
        )
        .await
        .map(|grant| grant.token)
}

/// The failures of a call that ended in 503.
fn unavailable(result: Result<String, ProviderError>) -> service_b::provider::Failures {
    match result {
        Err(ProviderError::Unavailable(failures)) => failures,
        other => panic!("expected 503, got {other:?}"),
    }
}

fn kinds(failures: &service_b::provider::Failures) -> Vec<AttemptOutcome> {
    failures.attempts.iter().map(|f| f.kind).collect()
}

#[tokio::test]
async fn a_token_on_the_first_attempt() {
    let (url, seen) = stub(Stub::Reply(TOKEN)).await;
    assert_eq!(
        call(&provider(&url, &[]).await, None).await.expect("token"),
        "token-divya"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_401_is_a_s_final_word() {
    let (url, seen) = stub(Stub::Reply(UNAUTHORIZED)).await;
    assert!(matches!(
        call(&provider(&url, &[]).await, None).await,
        Err(ProviderError::InvalidCredentials)
    ));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "never retried");
}

#[tokio::test]
async fn server_errors_are_retried_until_the_attempts_are_spent() {
    let (url, seen) = stub(Stub::Reply(UNAVAILABLE)).await;
    let failures =
        unavailable(call(&provider(&url, &["--provider-attempts", "3"]).await, None).await);
    assert_eq!(kinds(&failures), [AttemptOutcome::BadStatus; 3]);
    assert_eq!(failures.stopped, StopReason::AttemptsSpent);
    assert_eq!(
        failures.details(),
        "provider answered 503 Service Unavailable on all 3 attempts"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn timeouts_are_retried_each_within_its_own_timeout() {
    let (url, seen) = stub(Stub::Hang).await;
    let started = Instant::now();
    let failures = unavailable(
        call(
            &provider(&url, &["--provider-timeout-ms", "200"]).await,
            None,
        )
        .await,
    );
    assert_eq!(kinds(&failures), [AttemptOutcome::Timeout; 2]);
    assert_eq!(failures.stopped, StopReason::AttemptsSpent);
    assert_eq!(failures.details(), "timed out after 200ms on both attempts");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn refused_connections_are_connection_errors() {
    let vacant = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", vacant.local_addr().expect("addr"));
    drop(vacant);
    let failures = unavailable(call(&provider(&url, &[]).await, None).await);
    assert_eq!(kinds(&failures), [AttemptOutcome::ConnectionError; 2]);
    assert_eq!(failures.stopped, StopReason::AttemptsSpent);
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_not_retried_and_the_503_says_why() {
    let (url, seen) = stub(Stub::Reply(NOT_HTTP)).await;
    let failures =
        unavailable(call(&provider(&url, &["--provider-attempts", "3"]).await, None).await);
    assert_eq!(kinds(&failures), [AttemptOutcome::ProtocolError]);
    assert_eq!(failures.stopped, StopReason::NotRetryable);
    assert!(
        failures
            .details()
            .ends_with("on the only attempt; not retried: a protocol error would recur"),
        "{}",
        failures.details()
    );
    assert!(
        !failures.details().contains("budget"),
        "the budget was not what stopped B"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_spent_budget_stops_the_retry_and_says_so() {
    let (url, seen) = stub(Stub::Reply(UNAVAILABLE)).await;
    let provider = provider(
        &url,
        &[
            "--retry-budget-ratio",
            "0",
            "--retry-budget-min-per-sec",
            "0",
        ],
    )
    .await;
    let failures = unavailable(call(&provider, None).await);
    assert_eq!(kinds(&failures), [AttemptOutcome::BadStatus]);
    assert_eq!(failures.stopped, StopReason::BudgetSpent);
    assert_eq!(
        failures.details(),
        "provider answered 503 Service Unavailable on the only attempt; not retried: retry budget spent"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_deadline_stops_a_call_with_attempts_left() {
    let (url, seen) = stub(Stub::Hang).await;
    let provider = provider(
        &url,
        &[
            "--provider-timeout-ms",
            "300",
            "--provider-attempts",
            "5",
            "--provider-deadline-ms",
            "450",
        ],
    )
    .await;
    let started = Instant::now();
    let failures = unavailable(call(&provider, None).await);
    assert_eq!(failures.stopped, StopReason::Deadline);
    assert!(
        failures
            .details()
            .ends_with("gave up at the 450ms deadline")
    );
    assert!(
        seen.load(Ordering::SeqCst) < 5,
        "attempts were left: {}",
        seen.load(Ordering::SeqCst)
    );
    assert!(
        started.elapsed() < Duration::from_millis(450 + 200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_open_breaker_refuses_without_calling_a() {
    let (url, seen) = stub(Stub::Reply(UNAVAILABLE)).await;
    let provider = provider(
        &url,
        &["--breaker-threshold", "1", "--breaker-cooldown-ms", "60000"],
    )
    .await;
    unavailable(call(&provider, None).await);
    let before = seen.load(Ordering::SeqCst);
    assert!(matches!(
        call(&provider, None).await,
        Err(ProviderError::CircuitOpen { .. })
    ));
    assert_eq!(seen.load(Ordering::SeqCst), before, "A was not called");
}

#[tokio::test]
async fn a_timeout_the_caller_asked_for_does_not_open_the_breaker() {
    let (url, _) = stub(Stub::Hang).await;
    let provider = provider(
        &url,
        &["--provider-timeout-ms", "100", "--breaker-threshold", "1"],
    )
    .await;
    unavailable(call(&provider, Some(100)).await);
    unavailable(call(&provider, Some(100)).await);
    assert_eq!(
        provider.circuit_state(),
        service_b::resilience::CircuitState::Closed
    );
    unavailable(call(&provider, None).await);
    assert_eq!(
        provider.circuit_state(),
        service_b::resilience::CircuitState::Open,
        "an unasked-for timeout is evidence"
    );
}

/// A token answer whose head and first bytes arrive at once, and the rest after `pause`.
fn token_in_two_parts(pause: Duration) -> Stub {
    Stub::Stalled {
        head_and_start: "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 38\r\nconnection: close\r\n\r\n{\"token\":",
        pause,
        rest: Some("\"token-divya\",\"user\":\"divya\"}"),
    }
}

#[tokio::test]
async fn a_body_that_stalls_past_the_timeout_is_a_timeout_and_retried() {
    let (url, seen) = stub(token_in_two_parts(Duration::from_millis(600))).await;
    let failures = unavailable(
        call(
            &provider(&url, &["--provider-timeout-ms", "300"]).await,
            None,
        )
        .await,
    );
    assert_eq!(kinds(&failures), [AttemptOutcome::Timeout; 2]);
    assert_eq!(failures.details(), "timed out after 300ms on both attempts");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_slower_than_its_head_but_within_the_timeout_is_a_token() {
    let (url, _) = stub(token_in_two_parts(Duration::from_millis(50))).await;
    assert_eq!(
        call(
            &provider(&url, &["--provider-timeout-ms", "1000"]).await,
            None
        )
        .await
        .expect("token"),
        "token-divya"
    );
}

#[tokio::test]
async fn a_body_that_breaks_off_is_a_connection_error_and_retried() {
    let (url, seen) = stub(Stub::Stalled {
        head_and_start: "HTTP/1.1 200 OK\r\ncontent-length: 38\r\n\r\n{\"tok",
        pause: Duration::ZERO,
        rest: None,
    })
    .await;
    let failures = unavailable(call(&provider(&url, &[]).await, None).await);
    assert_eq!(kinds(&failures), [AttemptOutcome::ConnectionError; 2]);
    assert!(
        failures.details().starts_with("answer broke off: "),
        "{}",
        failures.details()
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_announced_larger_than_the_limit_is_refused_unread() {
    let (url, seen) = stub(Stub::Reply(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2147483648\r\n\r\n{",
    ))
    .await;
    let failures = unavailable(call(&provider(&url, &[]).await, None).await);
    assert_eq!(kinds(&failures), [AttemptOutcome::ProtocolError]);
    assert_eq!(
        failures.details(),
        "answer of 2147483648 bytes is over the 65536-byte limit on the only attempt; not retried: a protocol error would recur"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_endless_answer_is_refused_once_past_the_limit() {
    let (url, _) = stub(Stub::Endless).await;
    let started = Instant::now();
    let failures = unavailable(call(&provider(&url, &[]).await, None).await);
    assert_eq!(kinds(&failures), [AttemptOutcome::ProtocolError]);
    assert!(
        failures.details().contains("over the 65536-byte limit"),
        "{}",
        failures.details()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn two_providers_in_one_process_keep_their_own_labels() {
    let (metrics, recorder) = telemetry::observe::Metrics::build(
        &[],
        telemetry::observe::export::losses::Losses::leaked(),
    )
    .expect("recorder");
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let (first, _) = stub(Stub::Reply(TOKEN)).await;
    let (second, _) = stub(Stub::Reply(UNAVAILABLE)).await;
    let one = provider(&first, &[]).await;
    let two = provider(&format!("{second}/v2/"), &["--provider-attempts", "1"]).await;
    call(&one, None).await.expect("a token from the first");
    unavailable(call(&two, None).await);

    let text = metrics.render_prometheus();
    let count = |labels: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("http_client_request_duration_seconds_count") && l.contains(labels)
            })
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, n)| n.to_owned())
    };
    let port = |url: &str| {
        url.rsplit_once(':')
            .map(|(_, p)| p.to_owned())
            .expect("port")
    };
    assert_eq!(
        count(&format!(
            r#"server_port="{}",url_template="/token",network_protocol_version="1.1",http_response_status_code="200""#,
            port(&first)
        ))
        .as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        count(&format!(
            r#"server_port="{}",url_template="/v2/token",network_protocol_version="1.1",http_response_status_code="503",error_type="503""#,
            port(&second)
        ))
        .as_deref(),
        Some("1"),
        "{text}"
    );
}
