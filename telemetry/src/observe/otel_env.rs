//! The OpenTelemetry environment variables: each is honoured or refused at start, never
//! ignored. [`check`] runs before anything is built; a variable this build does not read,
//! or a value it cannot honour, stops the service with a message naming the variable and
//! what is supported.
//!
//! Honoured here or by the SDK and the OTLP exporter: the variables in [`HONOURED`].
//! Refused with a reason: gRPC and JSON protocols, TLS client settings, exporters other
//! than OTLP, propagators other than W3C's, OTLP metrics (no maintained bridge from the
//! `metrics` facade to the OpenTelemetry SDK; `/metrics` is the pull exporter), and any
//! other `OTEL_*` variable.

use std::collections::BTreeMap;

/// Every `OTEL_*` variable this build honours, with what it does.
pub const HONOURED: &[(&str, &str)] = &[
    (
        "OTEL_SDK_DISABLED",
        "true: nothing is exported (ids are still made for the logs)",
    ),
    (
        "OTEL_SERVICE_NAME",
        "service.name, in every signal and on every log line",
    ),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "resource attributes, on spans, log records and target_info",
    ),
    (
        "OTEL_TRACES_SAMPLER",
        "always_on, always_off, traceidratio, parentbased_always_on (default), parentbased_always_off, parentbased_traceidratio",
    ),
    (
        "OTEL_TRACES_SAMPLER_ARG",
        "the ratio of the traceidratio samplers, 0.0 to 1.0",
    ),
    (
        "OTEL_PROPAGATORS",
        "tracecontext, baggage (default: both), or none",
    ),
    ("OTEL_TRACES_EXPORTER", "otlp (default) or none"),
    (
        "OTEL_LOGS_EXPORTER",
        "otlp, or none (default: the JSON lines on stdout are the logs)",
    ),
    (
        "OTEL_METRICS_EXPORTER",
        "prometheus (default: the pull exporter on /metrics) or none (the same: /metrics stays)",
    ),
    (
        "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS",
        "the HTTP methods kept as they are in labels and span names; any other is _OTHER",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "the collector's base URL (/v1/traces and /v1/logs appended)",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "the traces URL, as is",
    ),
    ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "the logs URL, as is"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf only"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf only"),
    ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf only"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "headers on every export"),
    (
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "headers on span exports",
    ),
    ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "headers on log exports"),
    (
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "milliseconds an export may take",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "milliseconds a span export may take",
    ),
    (
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
        "milliseconds a log export may take",
    ),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip or none"),
    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip or none"),
    ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip or none"),
    (
        "OTEL_BSP_SCHEDULE_DELAY",
        "milliseconds between span exports",
    ),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "spans the export queue holds"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "spans per export"),
    (
        "OTEL_BLRP_SCHEDULE_DELAY",
        "milliseconds between log record exports",
    ),
    (
        "OTEL_BLRP_MAX_QUEUE_SIZE",
        "log records the export queue holds",
    ),
    ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "log records per export"),
    ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "attributes a span keeps"),
    ("OTEL_SPAN_EVENT_COUNT_LIMIT", "events a span keeps"),
    ("OTEL_SPAN_LINK_COUNT_LIMIT", "links a span keeps"),
];

/// The OpenTelemetry settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelEnv {
    /// Whether spans are exported (when an endpoint is set).
    pub export_traces: bool,
    /// Whether log records are exported (when an endpoint is set).
    pub export_logs: bool,
    /// W3C Trace Context in and out.
    pub trace_context: bool,
    /// W3C Baggage in and out.
    pub baggage: bool,
    /// The known HTTP methods, when overridden.
    pub known_methods: Option<Vec<String>>,
}

/// The settings this process runs with, set once at start-up by [`set`].
static CURRENT: std::sync::OnceLock<OtelEnv> = std::sync::OnceLock::new();

/// Makes `env` this process's settings (once; later calls change nothing).
pub fn set(env: OtelEnv) {
    let _ = CURRENT.set(env);
}

/// This process's settings: what [`set`] was given, or the defaults before it was called.
pub fn current() -> &'static OtelEnv {
    CURRENT.get_or_init(|| OtelEnv {
        export_traces: true,
        export_logs: false,
        trace_context: true,
        baggage: true,
        known_methods: None,
    })
}

/// Reads and checks every `OTEL_*` variable of the process environment.
pub fn check() -> Result<OtelEnv, String> {
    let vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("OTEL_"))
        .collect();
    check_vars(&vars)
}

fn check_vars(vars: &BTreeMap<String, String>) -> Result<OtelEnv, String> {
    let supported = |name: &str| HONOURED.iter().any(|(n, _)| *n == name);
    for name in vars.keys() {
        if !supported(name) {
            return Err(format!(
                "{name} is not supported by this build; it reads {}",
                HONOURED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let refuse = |name: &str, value: &str| {
        let what = HONOURED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, what)| *what);
        format!("{name}={value} is not supported: {what}")
    };
    let one_of = |name: &str, allowed: &[&str]| -> Result<(), String> {
        match get(name) {
            Some(value) if !allowed.contains(&value.to_ascii_lowercase().as_str()) => {
                Err(refuse(name, value))
            }
            _ => Ok(()),
        }
    };
    one_of("OTEL_SDK_DISABLED", &["true", "false"])?;
    one_of(
        "OTEL_TRACES_SAMPLER",
        &[
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ],
    )?;
    if let Some(ratio) = get("OTEL_TRACES_SAMPLER_ARG")
        && !ratio.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r))
    {
        return Err(refuse("OTEL_TRACES_SAMPLER_ARG", ratio));
    }
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    ] {
        one_of(name, &["http/protobuf"])?;
    }
    for name in [
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
    ] {
        one_of(name, &["gzip", "none"])?;
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BLRP_SCHEDULE_DELAY",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_BLRP_MAX_QUEUE_SIZE",
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
        "OTEL_SPAN_EVENT_COUNT_LIMIT",
        "OTEL_SPAN_LINK_COUNT_LIMIT",
    ] {
        if let Some(value) = get(name)
            && !value.parse::<u32>().is_ok_and(|n| n > 0)
        {
            return Err(format!(
                "{name}={value} is not supported: a whole number above 0"
            ));
        }
    }
    one_of("OTEL_TRACES_EXPORTER", &["otlp", "none"])?;
    one_of("OTEL_LOGS_EXPORTER", &["otlp", "none"])?;
    if let Some(value) = get("OTEL_METRICS_EXPORTER")
        && !matches!(value.to_ascii_lowercase().as_str(), "prometheus" | "none")
    {
        return Err(format!(
            "OTEL_METRICS_EXPORTER={value} is not supported: metrics are served on /metrics \
             for a Prometheus scrape (prometheus); there is no maintained bridge from the \
             metrics facade to the OpenTelemetry SDK to push them over OTLP"
        ));
    }
    let (trace_context, baggage) = match get("OTEL_PROPAGATORS") {
        None => (true, true),
        Some(list) => {
            let mut found = (false, false);
            for propagator in list.split(',').map(str::trim) {
                match propagator {
                    "tracecontext" => found.0 = true,
                    "baggage" => found.1 = true,
                    "none" => {}
                    _ => return Err(refuse("OTEL_PROPAGATORS", list)),
                }
            }
            found
        }
    };
    let known_methods = match get("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS") {
        None => None,
        Some(list) => {
            let methods: Vec<String> = list.split(',').map(|m| m.trim().to_owned()).collect();
            let valid =
                |m: &String| !m.is_empty() && http::Method::from_bytes(m.as_bytes()).is_ok();
            if !methods.iter().all(valid) {
                return Err(format!(
                    "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS={list} is not supported: a \
                     comma-separated list of HTTP method tokens (e.g. GET,POST,BREW)"
                ));
            }
            Some(methods)
        }
    };
    let is = |name: &str, value: &str| get(name).is_some_and(|v| v.eq_ignore_ascii_case(value));
    Ok(OtelEnv {
        export_traces: !is("OTEL_TRACES_EXPORTER", "none"),
        export_logs: is("OTEL_LOGS_EXPORTER", "otlp"),
        trace_context,
        baggage,
        known_methods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_defaults_export_traces_with_the_w3c_propagators() {
        let env = check_vars(&vars(&[])).expect("no variables");
        assert_eq!(
            env,
            OtelEnv {
                export_traces: true,
                export_logs: false,
                trace_context: true,
                baggage: true,
                known_methods: None,
            }
        );
    }

    #[test]
    fn each_variable_is_honoured() {
        let env = check_vars(&vars(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "otlp"),
            ("OTEL_PROPAGATORS", "baggage"),
            ("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,POST,BREW"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
        ]))
        .expect("all supported");
        assert!(!env.export_traces && env.export_logs);
        assert!(!env.trace_context && env.baggage);
        assert_eq!(
            env.known_methods.as_deref(),
            Some(&["GET".to_owned(), "POST".to_owned(), "BREW".to_owned()][..])
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_naming_the_variable() {
        for (name, value) in [
            ("OTEL_PROPAGATORS", "b3"),
            ("OTEL_PROPAGATORS", "tracecontext,jaeger"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_LOGS_EXPORTER", "console"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
            ("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,,POST"),
            ("OTEL_SDK_DISABLED", "yes"),
        ] {
            let refused = check_vars(&vars(&[(name, value)])).expect_err(name);
            assert!(refused.starts_with(name), "{refused}");
        }
    }
}
