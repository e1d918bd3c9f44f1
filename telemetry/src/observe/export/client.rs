//! The HTTP client the OTLP exporters send with: reqwest's blocking client (exports run on
//! the SDK's own threads, outside any Tokio runtime), with the OTLP/HTTP specification's
//! retries around each export. A collector's 429, 502, 503 or 504 is retried after its
//! `Retry-After`, or else after an exponential backoff with jitter, and so is a connection
//! that could not be made; all within the export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, or
//! the signal's own), which bounds the whole export, retries and waits included.
//!
//! How an export that failed ended is told apart for the counters (`error_type`), by its
//! last attempt: `timeout` (no answer within the time left), `network_error` (no
//! connection could be made or it broke), `rejected` (the collector answered with an error
//! status, retryable or not). The OTLP exporter reports every failure of its client as a
//! "network error", so the client leaves its own word in the pipeline
//! ([`Pipeline::record_failure`]) for [`crate::observe::export::queue::Counted`] to read.
//!
//! opentelemetry-otlp's own retry (`experimental-http-retry`) needs an async runtime, which
//! the blocking client runs without; the decision here ([`next_step`]) is pure and tested
//! on its own.

use std::io::Read as _;
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response, StatusCode};
use opentelemetry_http::{Bytes, HttpClient, HttpError};

use crate::observe::export::losses::{ExportError, Pipeline};

/// The first backoff before a retry; each retry doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest backoff between two attempts (a `Retry-After` may ask for more).
pub const MAX_BACKOFF: Duration = Duration::from_millis(1600);

/// Most bytes of a collector's answer read (an `Export…ServiceResponse` is a few bytes).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// The statuses the OTLP/HTTP specification says to retry: "429 Too Many Requests, 502 Bad
/// Gateway, 503 Service Unavailable, 504 Gateway Timeout".
pub fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The collector answered with this status, asking to wait as `Retry-After` says.
    Answered(StatusCode, Option<Duration>),
    /// No answer within the time left.
    TimedOut,
    /// No connection could be made, or it broke.
    NoConnection,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The export is done: the collector took it.
    Delivered,
    /// Wait this long, then try again.
    Retry(Duration),
    /// The export failed, as this kind.
    GiveUp(ExportError),
}

/// The step after attempt number `retries` (0 for the first) ended as `attempt`, with
/// `left` until the export's deadline; `backoff` is the wait the backoff policy gives
/// (see [`backoff`]). A wait that would end past the deadline is not started.
pub fn next_step(attempt: Attempt, left: Duration, backoff: Duration) -> Step {
    let retry_within = |wait: Duration, otherwise: ExportError| {
        if wait < left {
            Step::Retry(wait)
        } else {
            Step::GiveUp(otherwise)
        }
    };
    match attempt {
        Attempt::Answered(status, _) if status.is_success() => Step::Delivered,
        Attempt::Answered(status, retry_after) if is_retryable(status) => {
            // Never sooner than the backoff: a `Retry-After: 0` (or a date in the past)
            // must not turn the retries into a loop against a collector that is
            // struggling.
            retry_within(
                retry_after.map_or(backoff, |asked| asked.max(backoff)),
                ExportError::Rejected,
            )
        }
        Attempt::Answered(..) => Step::GiveUp(ExportError::Rejected),
        // The attempt had all the time there was.
        Attempt::TimedOut => Step::GiveUp(ExportError::Timeout),
        Attempt::NoConnection => retry_within(backoff, ExportError::Network),
    }
}

/// The backoff before retry number `retries + 1`: [`FIRST_BACKOFF`] doubled per retry, at
/// most [`MAX_BACKOFF`], of which a random half is waited (the other half is jitter, so
/// exporters that failed together do not retry together).
pub fn backoff(retries: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << retries.min(16))
        .min(MAX_BACKOFF);
    full / 2 + full.mul_f64(rand::random::<f64>() / 2.0)
}

/// `Retry-After` as a wait: delay-seconds or an HTTP date (RFC 9110 10.2.3).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// See the module docs.
#[derive(Debug)]
pub struct RetryingClient {
    client: reqwest::blocking::Client,
    /// The whole export's time.
    timeout: Duration,
    /// Where the kind of a failed export is left for the counters.
    pipeline: &'static Pipeline,
}

impl RetryingClient {
    /// A client whose exports take at most `timeout` each, telling `pipeline` how the
    /// failed ones ended.
    pub fn new(timeout: Duration, pipeline: &'static Pipeline) -> Result<Self, String> {
        // reqwest's blocking client runs a runtime of its own: built on a thread of its
        // own, as opentelemetry-otlp builds its default one, never inside the service's.
        let client = std::thread::spawn(|| reqwest::blocking::Client::builder().build())
            .join()
            .map_err(|_| "the OTLP HTTP client could not be built".to_owned())?
            .map_err(|e| format!("the OTLP HTTP client could not be built: {e}"))?;
        Ok(Self {
            client,
            timeout,
            pipeline,
        })
    }

    /// One attempt, with `left` to get a whole answer.
    fn attempt(
        &self,
        request: &Request<Bytes>,
        left: Duration,
    ) -> (Attempt, Option<Response<Bytes>>) {
        let sent = self
            .client
            .request(request.method().clone(), request.uri().to_string())
            .headers(request.headers().clone())
            .body(request.body().clone())
            .timeout(left)
            .send();
        let failed = |error: &reqwest::Error| {
            if error.is_timeout() {
                Attempt::TimedOut
            } else {
                Attempt::NoConnection
            }
        };
        let mut answer = match sent {
            Ok(answer) => answer,
            Err(error) => return (failed(&error), None),
        };
        let status = answer.status();
        let wait = answer
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = status;
        *response.headers_mut() = std::mem::take(answer.headers_mut());
        if status.is_success() {
            let mut body = Vec::new();
            if let Err(error) = (&mut answer).take(MAX_ANSWER_BYTES).read_to_end(&mut body) {
                let timed_out = error.kind() == std::io::ErrorKind::TimedOut
                    || error
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<reqwest::Error>())
                        .is_some_and(reqwest::Error::is_timeout);
                let attempt = if timed_out {
                    Attempt::TimedOut
                } else {
                    Attempt::NoConnection
                };
                return (attempt, None);
            }
            *response.body_mut() = Bytes::from(body);
        }
        (Attempt::Answered(status, wait), Some(response))
    }
}

/// Why an export failed without an answer, as the exporter's client error.
#[derive(Debug, thiserror::Error)]
#[error("OTLP export failed: {0}")]
struct NoAnswer(&'static str);

#[async_trait::async_trait]
impl HttpClient for RetryingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let deadline = Instant::now() + self.timeout;
        let mut retries = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (attempt, response) = if left.is_zero() {
                (Attempt::TimedOut, None)
            } else {
                self.attempt(&request, left)
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match next_step(attempt, left, backoff(retries)) {
                Step::Delivered => {
                    return response.ok_or_else(|| NoAnswer("no answer").into());
                }
                // The exports of one pipeline run one at a time on the SDK's thread:
                // waiting here holds up nothing but the next batch.
                Step::Retry(wait) => std::thread::sleep(wait),
                Step::GiveUp(kind) => {
                    self.pipeline.record_failure(kind);
                    return match (kind, response) {
                        // The exporter reads the status and reports "status code: N".
                        (ExportError::Rejected, Some(response)) => Ok(response),
                        (ExportError::Timeout, _) => Err(NoAnswer("no answer in time").into()),
                        _ => Err(NoAnswer("no connection").into()),
                    };
                }
            }
            retries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_specifications_statuses_are_retried_and_others_are_rejections() {
        let wait = Duration::from_millis(100);
        let answered = |status: u16, after: Option<Duration>| {
            next_step(
                Attempt::Answered(StatusCode::from_u16(status).expect("status"), after),
                SECOND,
                wait,
            )
        };
        assert_eq!(answered(200, None), Step::Delivered);
        for status in [429, 502, 503, 504] {
            assert_eq!(answered(status, None), Step::Retry(wait), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 500, 501] {
            assert_eq!(
                answered(status, None),
                Step::GiveUp(ExportError::Rejected),
                "{status}"
            );
        }
        let asked = Duration::from_millis(700);
        assert_eq!(
            answered(503, Some(asked)),
            Step::Retry(asked),
            "Retry-After"
        );
        assert_eq!(
            answered(429, Some(2 * SECOND)),
            Step::GiveUp(ExportError::Rejected),
            "a wait past the deadline is not started"
        );
        assert_eq!(
            next_step(Attempt::NoConnection, SECOND, wait),
            Step::Retry(wait)
        );
        assert_eq!(
            next_step(Attempt::NoConnection, wait / 2, wait),
            Step::GiveUp(ExportError::Network)
        );
        assert_eq!(
            next_step(Attempt::TimedOut, SECOND, wait),
            Step::GiveUp(ExportError::Timeout)
        );
    }

    #[test]
    fn a_retry_after_shorter_than_the_backoff_waits_the_backoff() {
        let busy = |after| Attempt::Answered(StatusCode::SERVICE_UNAVAILABLE, after);
        let left = 10 * SECOND;
        let backoff = Duration::from_millis(150);
        assert_eq!(
            next_step(busy(Some(Duration::ZERO)), left, backoff),
            Step::Retry(backoff)
        );
        assert_eq!(next_step(busy(None), left, backoff), Step::Retry(backoff));
        assert_eq!(
            next_step(busy(Some(2 * SECOND)), left, backoff),
            Step::Retry(2 * SECOND)
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_jitter() {
        for retries in 0..20 {
            let full = FIRST_BACKOFF
                .saturating_mul(1 << retries.min(16))
                .min(MAX_BACKOFF);
            let wait = backoff(retries);
            assert!(wait >= full / 2 && wait <= full, "{retries}: {wait:?}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("3", now), Some(3 * SECOND));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(3 * SECOND)
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:30 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    /// A collector on loopback that answers each POST with the next of `answers` (a status
    /// and extra header lines), then 200; or never, for `None`.
    fn collector(answers: Vec<Option<(u16, &'static str)>>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
        let posts = Arc::new(AtomicUsize::new(0));
        let seen = posts.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        let mut body = vec![0; length];
                        let _ = std::io::Read::read_exact(&mut reader, &mut body);
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        match answers.get(n).copied().unwrap_or(Some((200, ""))) {
                            None => held.push(stream.try_clone().expect("clone")),
                            Some((status, extra)) => {
                                let _ = write!(
                                    stream,
                                    "HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\n\r\n"
                                );
                            }
                        }
                        length = 0;
                    }
                }
            }
        });
        (url, posts)
    }

    fn export(url: &str, timeout: Duration) -> (Result<StatusCode, String>, Option<ExportError>) {
        let pipeline: &'static Pipeline = Box::leak(Box::default());
        let client = RetryingClient::new(timeout, pipeline).expect("client");
        let request = Request::post(url)
            .body(Bytes::from_static(b"spans"))
            .expect("request");
        let sent = run(client.send_bytes(request));
        (
            sent.map(|r| r.status()).map_err(|e| e.to_string()),
            pipeline.take_failure(),
        )
    }

    /// Runs `future` to its end on this thread, as the SDK's export thread does: the
    /// client blocks inside it, so it is ready when first polled.
    fn run<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
        }
    }

    #[test]
    fn a_collector_that_recovers_gets_the_export_on_a_retry() {
        let (url, posts) = collector(vec![Some((503, "")), Some((429, "retry-after: 0\r\n"))]);
        let (sent, failure) = export(&url, 10 * SECOND);
        assert_eq!(sent, Ok(StatusCode::OK));
        assert_eq!(failure, None);
        assert_eq!(posts.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_rejection_is_not_retried() {
        let (url, posts) = collector(vec![Some((400, ""))]);
        let (sent, failure) = export(&url, 10 * SECOND);
        assert_eq!(sent, Ok(StatusCode::BAD_REQUEST));
        assert_eq!(failure, Some(ExportError::Rejected));
        assert_eq!(posts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_collector_still_unavailable_at_the_deadline_rejected_the_export() {
        let (url, posts) = collector(vec![Some((503, "")); 1000]);
        let (sent, failure) = export(&url, Duration::from_millis(400));
        assert_eq!(sent, Ok(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(failure, Some(ExportError::Rejected));
        assert!(posts.load(Ordering::SeqCst) >= 2, "retried");
    }

    #[test]
    fn a_collector_that_never_answers_is_a_timeout() {
        let (url, posts) = collector(vec![None]);
        let (sent, failure) = export(&url, Duration::from_millis(300));
        assert!(sent.is_err());
        assert_eq!(failure, Some(ExportError::Timeout));
        assert_eq!(posts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn no_collector_is_a_network_error() {
        let vacant = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1/traces", vacant.local_addr().expect("addr"));
        drop(vacant);
        let (sent, failure) = export(&url, Duration::from_millis(300));
        assert!(sent.is_err());
        assert_eq!(failure, Some(ExportError::Network));
    }
}
