//! The `OTEL_*` variables by policy: those this build honours, and those it refuses because
//! they ask for what it cannot do (see [`crate::observe::otel_env`] for the policy).

/// Every `OTEL_*` variable this build honours, with what it does.
pub const HONOURED: &[(&str, &str)] = &[
    (
        "OTEL_SDK_DISABLED",
        "true (any case): nothing is exported (ids are still made for the logs); anything else is false",
    ),
    (
        "OTEL_SERVICE_NAME",
        "service.name, in every signal and on every log line",
    ),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "resource attributes (key=value,…, values percent-decoded), on spans, log records and target_info",
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
        "the collector's base http:// URL (/v1/traces and /v1/logs appended)",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "the traces http:// URL, as is",
    ),
    (
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "the logs http:// URL, as is",
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf only"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf only"),
    ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf only"),
    (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "headers on every export: name=value,… (values percent-decoded)",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "headers on span exports: name=value,… (values percent-decoded)",
    ),
    (
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
        "headers on log exports: name=value,… (values percent-decoded)",
    ),
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
    (
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "spans per export, at most OTEL_BSP_MAX_QUEUE_SIZE",
    ),
    (
        "OTEL_BLRP_SCHEDULE_DELAY",
        "milliseconds between log record exports",
    ),
    (
        "OTEL_BLRP_MAX_QUEUE_SIZE",
        "log records the export queue holds",
    ),
    (
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
        "log records per export, at most OTEL_BLRP_MAX_QUEUE_SIZE",
    ),
    ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "attributes a span keeps"),
    ("OTEL_SPAN_EVENT_COUNT_LIMIT", "events a span keeps"),
    ("OTEL_SPAN_LINK_COUNT_LIMIT", "links a span keeps"),
];

/// Spec variables that ask for what this build cannot do, by prefix, with why: each stops
/// the service at start.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "TLS client settings: this build exports over plain http:// only",
    ),
    (
        "OTEL_EXPORTER_OTLP_CLIENT_",
        "TLS client settings: this build exports over plain http:// only",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "TLS client settings: this build exports over plain http:// only",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_",
        "TLS client settings: this build exports over plain http:// only",
    ),
    (
        "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
        "TLS client settings: this build exports over plain http:// only",
    ),
    (
        "OTEL_EXPORTER_OTLP_LOGS_CLIENT_",
        "TLS client settings: this build exports over plain http:// only",
    ),
    (
        "OTEL_EXPORTER_OTLP_INSECURE",
        "a gRPC setting: this build exports over OTLP/HTTP only",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
        "a gRPC setting: this build exports over OTLP/HTTP only",
    ),
    (
        "OTEL_EXPORTER_OTLP_LOGS_INSECURE",
        "a gRPC setting: this build exports over OTLP/HTTP only",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_",
        "metrics are served on /metrics for a Prometheus scrape, not pushed over OTLP",
    ),
    (
        "OTEL_EXPORTER_PROMETHEUS_",
        "/metrics is served on the service's own address",
    ),
    ("OTEL_EXPORTER_ZIPKIN_", "spans are exported over OTLP only"),
    (
        "OTEL_EXPORTER_JAEGER_",
        "spans are exported over OTLP only (Jaeger takes OTLP)",
    ),
];
