//! The OpenTelemetry environment variables, read and checked once at start ([`check`]),
//! by one policy:
//!
//! - A variable in [`HONOURED`] is honoured; a value it cannot take stops the service with a
//!   message naming the variable and what it takes. Two exceptions, as the specification
//!   has them: a boolean (`OTEL_SDK_DISABLED`) is true only for `true` (any case), anything
//!   else is false with a warning; an `OTEL_RESOURCE_ATTRIBUTES` that does not decode is
//!   discarded whole, with a warning.
//! - A variable of the specification that asks for what this build cannot do (TLS client
//!   settings, exporters other than OTLP/HTTP, OTLP metrics: [`REFUSED`]) stops the service,
//!   naming it and saying why: ignoring it would quietly export less, or less safely, than
//!   asked.
//! - Any other `OTEL_*` variable is not read, with a warning naming it (a start is never
//!   stopped by, say, the `OTEL_RESOURCE_ATTRIBUTES_POD_NAME` a Kubernetes operator injects).
//!
//! Warnings are log lines (`otel_setting_ignored`), written once logging is up.

use std::collections::BTreeMap;

pub mod values;
pub mod variables;

pub use variables::{HONOURED, REFUSED};

use values::{DEFAULT_QUEUE_SIZE, check_endpoint, check_headers, resource_attributes};

/// The OpenTelemetry settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelEnv {
    /// Whether spans are exported (when an endpoint is set).
    pub export_traces: bool,
    /// Whether log records are exported (when an endpoint is set).
    pub export_logs: bool,
    /// `OTEL_SDK_DISABLED=true`: nothing is exported.
    pub sdk_disabled: bool,
    /// W3C Trace Context in and out.
    pub trace_context: bool,
    /// W3C Baggage in and out.
    pub baggage: bool,
    /// The known HTTP methods, when overridden.
    pub known_methods: Option<Vec<String>>,
    /// `OTEL_SERVICE_NAME`, when set: the `service.name`, whatever else says otherwise.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded, in order (empty when unset or discarded).
    pub resource_attributes: Vec<(String, String)>,
    /// How long one span export may take, retries included
    /// (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub traces_export_timeout: std::time::Duration,
    /// The same for log records (`OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`, …).
    pub logs_export_timeout: std::time::Duration,
}

/// The specification's default export timeout: 10 s.
pub const DEFAULT_EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for OtelEnv {
    /// The settings of an environment with no `OTEL_*` variable.
    fn default() -> Self {
        Self {
            export_traces: true,
            export_logs: false,
            sdk_disabled: false,
            trace_context: true,
            baggage: true,
            known_methods: None,
            service_name: None,
            resource_attributes: Vec::new(),
            traces_export_timeout: DEFAULT_EXPORT_TIMEOUT,
            logs_export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }
}

/// A variable read otherwise than it says, or not read at all: logged at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The variable.
    pub variable: String,
    /// What was done instead, and why. Never the value of a variable that may hold a
    /// secret (headers).
    pub reason: String,
}

/// Reads and checks every `OTEL_*` variable of the process environment: the settings and
/// the warnings to log, or why the service cannot start.
pub fn check() -> Result<(OtelEnv, Vec<Warning>), String> {
    let vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("OTEL_"))
        .collect();
    check_vars(&vars)
}

fn check_vars(vars: &BTreeMap<String, String>) -> Result<(OtelEnv, Vec<Warning>), String> {
    let mut warnings = Vec::new();
    let honoured = |name: &str| HONOURED.iter().any(|(n, _)| *n == name);
    for name in vars.keys() {
        if let Some((_, why)) = REFUSED.iter().find(|(prefix, _)| name.starts_with(prefix)) {
            return Err(format!(
                "{name} is not supported: {why}; it reads {}",
                HONOURED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !honoured(name) {
            warnings.push(Warning {
                variable: name.clone(),
                reason: "not read by this build (see docs/configuration.md for the ones it reads)"
                    .to_owned(),
            });
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
    let sdk_disabled = match get("OTEL_SDK_DISABLED") {
        Some(value) if value.eq_ignore_ascii_case("true") => true,
        Some(value) if value.eq_ignore_ascii_case("false") => false,
        Some(value) => {
            warnings.push(Warning {
                variable: "OTEL_SDK_DISABLED".to_owned(),
                reason: format!(
                    "{value:?} is not true, so false: the SDK stays enabled (a boolean is true \
                     only for \"true\", in any case)"
                ),
            });
            false
        }
        None => false,
    };
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
    // A batch size asked for above its queue's size. (The default batch, 512, above a
    // smaller queue is cut to the queue by the SDK: nobody asked for more.)
    for (batch, queue) in [
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE"),
        (
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
            "OTEL_BLRP_MAX_QUEUE_SIZE",
        ),
    ] {
        let size = |name: &str| get(name).and_then(|v| v.parse::<u32>().ok());
        let Some(batch_size) = size(batch) else {
            continue;
        };
        let queue_size = size(queue).unwrap_or(DEFAULT_QUEUE_SIZE);
        if batch_size > queue_size {
            return Err(format!(
                "{batch}={batch_size} is not supported: a batch is taken from the queue, so at \
                 most {queue} ({queue_size})"
            ));
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ] {
        if let Some(value) = get(name) {
            check_endpoint(value)
                .map_err(|why| format!("{name}={value} is not supported: {why}"))?;
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
    ] {
        if let Some(value) = get(name) {
            // Not the value in the message: headers carry API keys.
            check_headers(value).map_err(|why| format!("{name} is not supported: {why}"))?;
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
    let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES").map(resource_attributes) {
        None => Vec::new(),
        Some(Ok(attributes)) => attributes,
        Some(Err(why)) => {
            warnings.push(Warning {
                variable: "OTEL_RESOURCE_ATTRIBUTES".to_owned(),
                reason: format!("{why}: the whole value is discarded"),
            });
            Vec::new()
        }
    };
    let is = |name: &str, value: &str| get(name).is_some_and(|v| v.eq_ignore_ascii_case(value));
    // Whole numbers above 0, checked above.
    let timeout = |signal: &str| {
        [signal, "OTEL_EXPORTER_OTLP_TIMEOUT"]
            .into_iter()
            .find_map(|name| get(name)?.parse().ok())
            .map_or(DEFAULT_EXPORT_TIMEOUT, std::time::Duration::from_millis)
    };
    let env = OtelEnv {
        export_traces: !is("OTEL_TRACES_EXPORTER", "none"),
        export_logs: is("OTEL_LOGS_EXPORTER", "otlp"),
        sdk_disabled,
        trace_context,
        baggage,
        known_methods,
        service_name: get("OTEL_SERVICE_NAME").map(str::to_owned),
        resource_attributes,
        traces_export_timeout: timeout("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
        logs_export_timeout: timeout("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT"),
    };
    Ok((env, warnings))
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

    fn settings(pairs: &[(&str, &str)]) -> (OtelEnv, Vec<Warning>) {
        check_vars(&vars(pairs)).expect("accepted")
    }

    #[test]
    fn the_defaults_export_traces_with_the_w3c_propagators() {
        assert_eq!(settings(&[]), (OtelEnv::default(), Vec::new()));
        let env = OtelEnv::default();
        assert!(env.export_traces && !env.export_logs && !env.sdk_disabled);
        assert!(env.trace_context && env.baggage);
    }

    #[test]
    fn each_variable_is_honoured() {
        let (env, warnings) = settings(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "otlp"),
            ("OTEL_PROPAGATORS", "baggage"),
            ("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,POST,BREW"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_SERVICE_NAME", "shop"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b,x-team=blue,"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "500"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!env.export_traces && env.export_logs && env.sdk_disabled);
        assert!(!env.trace_context && env.baggage);
        assert_eq!(
            env.known_methods.as_deref(),
            Some(&["GET".to_owned(), "POST".to_owned(), "BREW".to_owned()][..])
        );
        assert_eq!(env.service_name.as_deref(), Some("shop"));
        assert_eq!(env.traces_export_timeout, std::time::Duration::from_secs(3));
        assert_eq!(
            env.logs_export_timeout,
            std::time::Duration::from_millis(500)
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
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/etc/key.pem"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4318"),
            ("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,,POST"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
            ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "2049"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector/v1/traces"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "https://collector/v1/logs",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "x-api-key=s3cret,bad name=1",
            ),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-api-key=%zz"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key="),
        ] {
            let refused = check_vars(&vars(&[(name, value)])).expect_err(name);
            assert!(refused.starts_with(name), "{refused}");
            if name.ends_with("_HEADERS") {
                assert!(!refused.contains("s3cret"), "no header value in {refused}");
            }
        }
    }

    #[test]
    fn a_batch_within_its_queue_is_accepted() {
        let (_, warnings) = settings(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8192"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
            // The default batch (512) above a small queue: the SDK cuts it to the queue.
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "256"),
        ]);
        assert!(warnings.is_empty());
    }

    /// Booleans: `true` in any case is true; anything else is false, with a warning.
    #[test]
    fn a_boolean_other_than_true_is_false_with_a_warning() {
        for value in ["1", "yes", "on", "enabled"] {
            let (env, warnings) = settings(&[("OTEL_SDK_DISABLED", value)]);
            assert!(!env.sdk_disabled, "{value}");
            assert_eq!(warnings.len(), 1, "{value}");
            assert_eq!(warnings[0].variable, "OTEL_SDK_DISABLED");
        }
        let (env, warnings) = settings(&[("OTEL_SDK_DISABLED", "False")]);
        assert!(!env.sdk_disabled && warnings.is_empty());
    }

    /// A variable this build does not read is a warning, not a refusal: Kubernetes
    /// operators inject some (`OTEL_RESOURCE_ATTRIBUTES_POD_NAME`).
    #[test]
    fn a_variable_not_read_is_a_warning_naming_it() {
        let (env, warnings) = settings(&[
            ("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "shop-7d9f"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
            ("OTEL_LOG_LEVEL", "debug"),
        ]);
        assert_eq!(env, OtelEnv::default());
        let named: Vec<&str> = warnings.iter().map(|w| w.variable.as_str()).collect();
        assert_eq!(
            named,
            [
                "OTEL_BSP_EXPORT_TIMEOUT",
                "OTEL_LOG_LEVEL",
                "OTEL_RESOURCE_ATTRIBUTES_POD_NAME"
            ]
        );
    }

    #[test]
    fn resource_attributes_are_percent_decoded() {
        let (env, warnings) = settings(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            " deployment.environment.name = dev%20x , k8s.pod.name=shop%2C1,note=%C3%A9t%C3%A9=1,",
        )]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            env.resource_attributes,
            [
                ("deployment.environment.name".to_owned(), "dev x".to_owned()),
                ("k8s.pod.name".to_owned(), "shop,1".to_owned()),
                ("note".to_owned(), "été=1".to_owned()),
            ]
        );
    }

    /// The resource specification: on an error, the whole value is discarded, and the
    /// error is reported.
    #[test]
    fn a_malformed_resource_attributes_value_is_discarded_whole_with_a_warning() {
        for value in [
            "a=1,b",
            "a=1,=2",
            "a=1,b=two words",
            "a=1,b=%zz",
            "a=1,b=%C3",
            "a=1,b c=2",
            "a=1,b=\"q\"",
        ] {
            let (env, warnings) = settings(&[("OTEL_RESOURCE_ATTRIBUTES", value)]);
            assert!(env.resource_attributes.is_empty(), "{value}");
            assert_eq!(warnings.len(), 1, "{value}");
            assert_eq!(warnings[0].variable, "OTEL_RESOURCE_ATTRIBUTES");
            assert!(warnings[0].reason.contains("member 2"), "{:?}", warnings[0]);
        }
    }
}
