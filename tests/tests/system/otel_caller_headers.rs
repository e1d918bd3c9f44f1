//! A caller's trace headers never turn B's answer into an error, and go on to A only as the
//! W3C specifications allow: a huge or invalid `tracestate`, a baggage of hundreds of
//! members, a junk `traceparent`. (The attack: a 63-member, 16 KB `tracestate` passed on
//! as received made B's call exceed A's header limit, A answered 431 and B 502.)

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use system_tests::otlp::{OtlpReceiver, ReceivedSpan};
use system_tests::stub::token_reply;
use system_tests::{Kind, Reply, Service, client, demo_login, send};

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

struct Stack {
    otlp: OtlpReceiver,
    a: Service,
    b: Service,
    rt: tokio::runtime::Runtime,
}

impl Stack {
    fn start() -> Self {
        let otlp = OtlpReceiver::start();
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ];
        let a = Service::start(Kind::A, "127.0.0.1:0", &[], &env);
        let b = Service::start(Kind::B, "127.0.0.1:0", &["--provider-url", &a.url()], &env);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self { otlp, a, b, rt }
    }

    /// Calls B as the demo user with `headers`, as request `id`; B must answer 200.
    fn call(&self, id: &str, headers: &[(&str, String)]) -> Reply {
        let mut request = client()
            .post(self.b.at("/protected-action"))
            .header("x-request-id", id)
            .json(&demo_login());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let reply = self.rt.block_on(send(request));
        assert_eq!(reply.status, 200, "{id}: {}", reply.text);
        self.a.logs.request_line(id);
        reply
    }

    /// The `tracestate` B sent A on request `id` (its attempt span's), and the one A kept
    /// (its server span's).
    fn tracestates(&self, id: &str) -> (String, String) {
        let request = |s: &ReceivedSpan| s.attr("request.id") == id;
        let sent = self
            .otlp
            .wait_for(1, |s| {
                request(s) && s.service == "service-b" && s.kind == SpanKind::Client
            })
            .remove(0);
        let kept = self
            .otlp
            .wait_for(1, |s| {
                request(s) && s.service == "service-a" && s.kind == SpanKind::Server
            })
            .remove(0);
        (sent.trace_state, kept.trace_state)
    }
}

fn traceparent() -> (&'static str, String) {
    (
        "traceparent",
        format!("00-{CALLER_TRACE}-b7ad6b7169203331-01"),
    )
}

/// `count` members `k0=…`, each value `width` characters.
fn members(count: usize, width: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("k{i}={}", "v".repeat(width)))
        .collect()
}

#[test]
fn an_invalid_tracestate_is_dropped_whole_and_b_still_answers() {
    let stack = Stack::start();
    // 63 members, about 15 KB: within B's own header limit, over W3C's 32 members.
    let huge = members(63, 240).join(",");
    assert!(huge.len() > 15_000);
    // 42 members, one key twice.
    let mut duplicated = members(41, 8);
    duplicated.push("k3=again".into());
    for (id, tracestate) in [("huge", huge), ("duplicated", duplicated.join(","))] {
        stack.call(id, &[traceparent(), ("tracestate", tracestate)]);
        let (sent, kept) = stack.tracestates(id);
        assert_eq!(sent, "", "{id}: nothing of it goes on");
        assert_eq!(kept, "", "{id}");
    }
}

/// W3C: "Vendors SHOULD propagate at least 512 characters of a combined header"; a longer
/// valid one is cut, its members over 128 characters first, then from the end.
#[test]
fn a_long_valid_tracestate_is_cut_as_w3c_says() {
    let stack = Stack::start();
    let mut list = members(20, 36);
    list.insert(2, format!("long={}", "x".repeat(200)));
    stack.call("long", &[traceparent(), ("tracestate", list.join(","))]);
    let (sent, kept) = stack.tracestates("long");
    assert!(sent.len() <= 512, "{}", sent.len());
    assert!(sent.starts_with("k0=") && !sent.contains("long="), "{sent}");
    assert_eq!(kept, sent, "A keeps what B sent");
    let short = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    stack.call("short", &[traceparent(), ("tracestate", short.to_owned())]);
    assert_eq!(
        stack.tracestates("short").0,
        short,
        "a valid one goes on as it is"
    );
}

/// A stand-in A that answers every call with a token and keeps each request's head.
fn recording_provider() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let (mut head, mut length) = (String::new(), 0);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    kept.lock().expect("heads").push(head);
                    if stream.write_all(token_reply().as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, heads)
}

/// A baggage of 200 members (the OpenTelemetry SDK reads the first 64, its limit): B
/// forwards its own request id first, then what fits of the caller's, and says what it
/// left out. No caller can push B's entry out.
#[test]
fn a_baggage_of_hundreds_of_members_is_capped_with_the_request_id_first() {
    let (provider, heads) = recording_provider();
    let b = Service::b(&provider, &[]);
    let baggage = (0..200)
        .map(|i| format!("member{i:03}=value-{i:03}-{}", "x".repeat(12)))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        baggage.len() < 8192,
        "within what W3C Baggage asks to be read"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reply = rt.block_on(send(
        client()
            .post(b.at("/protected-action"))
            .header("x-request-id", "many-members")
            .header("baggage", baggage)
            .json(&demo_login()),
    ));
    assert_eq!(reply.status, 200, "{}", reply.text);
    let head = heads.lock().expect("heads").pop().expect("A was called");
    let sent = head
        .lines()
        .find_map(|l| l.strip_prefix("baggage: "))
        .expect("a baggage header")
        .trim()
        .to_owned();
    assert!(sent.starts_with("request.id=many-members,"), "{sent}");
    assert!(
        sent.split(',').count() <= 64 && sent.len() <= 4096,
        "{sent}"
    );
    let dropped = b
        .logs
        .wait_for(|l| l["event"] == "baggage_not_forwarded" && l["request_id"] == "many-members");
    assert!(dropped["dropped"].as_i64() > Some(0), "{dropped}");
}

#[test]
fn a_junk_traceparent_starts_a_trace_of_b_own() {
    let stack = Stack::start();
    for (id, junk) in [
        ("junk-1", "00-zzzz-yyyy-01"),
        (
            "junk-2",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        (
            "junk-3",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ),
    ] {
        let reply = stack.call(
            id,
            &[
                ("traceparent", junk.to_owned()),
                ("tracestate", "a=1".into()),
            ],
        );
        let trace = reply.header("traceresponse");
        assert!(trace.ends_with("-03"), "{id}: a new trace: {trace}");
        assert!(!trace.contains(CALLER_TRACE));
    }
}
