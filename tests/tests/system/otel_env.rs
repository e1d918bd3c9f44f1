//! The standard OpenTelemetry environment, each variable honoured and tested: compression,
//! headers, timeout, protocol, `OTEL_SDK_DISABLED`, the sampler; what is refused at start
//! and what only warns. (The resource's variables: `otel_resource.rs`; OTLP log records:
//! `otel_logs.rs`.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use system_tests::otlp::OtlpReceiver;
use system_tests::{Kind, Service, TIMEOUT, binary, client, eventually, send};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn login(a: &Service) -> reqwest::RequestBuilder {
    client()
        .post(a.at("/token"))
        .json(&system_tests::demo_login())
}

fn trace_of(reply: &system_tests::Reply) -> String {
    reply
        .header("traceresponse")
        .split('-')
        .nth(1)
        .expect("traceresponse")
        .to_owned()
}

#[test]
fn compression_and_headers_reach_the_collector() {
    let otlp = OtlpReceiver::start();
    let a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-tenant=lab,x-team=blue%20team",
            ),
        ],
    );
    let reply = runtime().block_on(send(login(&a)));
    otlp.wait_for_trace(&trace_of(&reply), 1);
    let export = otlp
        .exports()
        .into_iter()
        .find(|e| e.path == "/v1/traces")
        .expect("an export");
    let header = |name: &str| {
        export
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-encoding"), "gzip");
    assert_eq!(header("x-tenant"), "lab");
    assert_eq!(header("x-team"), "blue team");
}

#[test]
fn the_export_timeout_comes_from_the_environment() {
    // A collector that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", hung.local_addr().expect("addr"));
    let _keep = std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().take(8).collect();
        std::thread::sleep(TIMEOUT);
        drop(held);
    });
    let a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
        ],
    );
    let rt = runtime();
    let started = Instant::now();
    rt.block_on(send(login(&a)));
    // A collector that never answers within the export timeout: a timeout.
    let failed = "otel_sdk_exporter_span_exported_total{otel_component_type=\"otlp_http_span_exporter\",otel_component_name=\"otlp_http_span_exporter/0\",error_type=\"timeout\"}";
    eventually("an export failure counted")
        .every(Duration::from_millis(50))
        .until(|| rt.block_on(a.series(failed)) >= 1.0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the 300 ms timeout, not the 10 s default, ended the export: {:?}",
        started.elapsed()
    );
}

/// Every `OTEL_*` variable is honoured or refused: a value this build cannot honour, or a
/// variable it does not read, stops the service at start with a message naming the
/// variable and what is supported.
#[test]
fn what_cannot_be_honoured_is_refused_at_start_saying_what_is_supported() {
    for (name, value, supported) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "http/protobuf"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "http/json",
            "http/protobuf",
        ),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc", "http/protobuf"),
        ("OTEL_PROPAGATORS", "b3", "tracecontext"),
        ("OTEL_METRICS_EXPORTER", "otlp", "/metrics"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "otlp"),
        (
            "OTEL_TRACES_SAMPLER",
            "jaeger_remote",
            "parentbased_traceidratio",
        ),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/ca.pem",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        // Accepted once, and failing at every export after: refused at start.
        (
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "4096",
            "at most OTEL_BSP_MAX_QUEUE_SIZE (2048)",
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key", "name=value"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "localhost:4318",
            "http://",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector:4318",
            "http://",
        ),
    ] {
        let mut child = Command::new(binary(Kind::A))
            .args(["--listen", "127.0.0.1:0"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env(name, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start");
        let status = eventually(format!("the refusal of {name}={value}"))
            .until(|| child.try_wait().expect("wait"));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("read");
        assert!(!status.success(), "{name}={value} was accepted");
        assert!(
            stderr.contains(&format!("{name}={value} is not supported"))
                || stderr.contains(&format!("{name} is not supported")),
            "{name}={value}: {stderr}"
        );
        assert!(stderr.contains(supported), "{name}={value}: {stderr}");
    }
}

#[test]
fn sdk_disabled_or_no_traces_exporter_exports_nothing_and_always_off_samples_nothing() {
    let otlp = OtlpReceiver::start();
    let env = |extra: (&'static str, &'static str)| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
            (extra.0, extra.1.to_owned()),
        ]
    };
    let start = |kind, extra| {
        let env = env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Service::start(kind, "127.0.0.1:0", &[], &env)
    };
    let control = start(Kind::A, ("OTEL_TRACES_SAMPLER", "always_on"));
    let disabled = start(Kind::A, ("OTEL_SDK_DISABLED", "true"));
    let off = start(Kind::A, ("OTEL_TRACES_SAMPLER", "always_off"));
    let no_exporter = start(Kind::A, ("OTEL_TRACES_EXPORTER", "none"));
    let rt = runtime();

    let silent = rt.block_on(send(login(&disabled)));
    let not_exported = rt.block_on(send(login(&no_exporter)));
    let unsampled = rt.block_on(send(login(&off)));
    assert!(
        unsampled.header("traceresponse").ends_with("-02"),
        "not sampled, a random trace id"
    );
    let line = off.logs.request_line(unsampled.request_id());
    assert_eq!(
        line["trace_flags"], "00",
        "the log line says its trace is not kept"
    );
    assert_eq!(line["trace_id"], trace_of(&unsampled).as_str());
    // Exports run every 50 ms: once the control's span of a later request has arrived,
    // the others would have too.
    let later = rt.block_on(send(login(&control)));
    otlp.wait_for_trace(&trace_of(&later), 1);
    let spans = otlp.spans();
    for quiet in [&silent, &unsampled, &not_exported] {
        let trace = trace_of(quiet);
        assert!(
            spans.iter().all(|s| s.trace_id != trace),
            "{trace} was exported"
        );
    }
}

/// Booleans are `true` or false with a warning, and a variable this build does not read
/// (`OTEL_RESOURCE_ATTRIBUTES_POD_NAME`, which Kubernetes operators inject) is a warning:
/// neither stops a start, and each warning names its variable.
#[test]
fn a_boolean_that_is_not_true_and_an_unknown_variable_warn_and_start() {
    let otlp = OtlpReceiver::start();
    let a = Service::start(
        Kind::A,
        "127.0.0.1:0",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SDK_DISABLED", "1"),
            ("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "shop-7d9f"),
        ],
    );
    for variable in ["OTEL_SDK_DISABLED", "OTEL_RESOURCE_ATTRIBUTES_POD_NAME"] {
        let warning = a
            .logs
            .wait_for(|l| l["event"] == "otel_setting_ignored" && l["variable"] == variable);
        assert_eq!(warning["level"], "WARN", "{warning}");
    }
    // `1` is not `true`: the SDK stays enabled, and spans are exported.
    let reply = runtime().block_on(send(login(&a)));
    otlp.wait_for_trace(&trace_of(&reply), 1);
}
