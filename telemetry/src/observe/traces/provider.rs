//! The tracer provider: `tracing` spans become OpenTelemetry spans, joined across services by the W3C
//! `traceparent` header, and exported over OTLP/HTTP when an endpoint is configured.
//!
//! Configuration is the OpenTelemetry standard environment:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. `http://localhost:4318`, the SDK appends `/v1/traces`)
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is); `OTEL_EXPORTER_OTLP_PROTOCOL` (only
//! `http/protobuf` is built in: anything else is refused at start); `…_HEADERS`, `…_TIMEOUT`
//! and `…_COMPRESSION` (`gzip`), read by the exporter; `OTEL_SERVICE_NAME` (defaults to the
//! service's own name) and `OTEL_RESOURCE_ATTRIBUTES` (which may override
//! `service.instance.id`, a fresh UUID per process, and `service.version`), read by
//! [`crate::observe::otel_env`]; `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`;
//! `OTEL_SDK_DISABLED=true` exports nothing. All are checked at start (see
//! [`crate::observe::otel_env`]). With no endpoint nothing is exported, but spans still get real trace and span
//! ids, so log lines can be correlated all the same.
//!
//! Export is batched on the SDK's own thread, behind a bounded queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048): a slow or absent collector never delays a
//! request. Spans dropped at a full queue and spans the collector did not take are counted
//! (see [`crate::observe::export::queue`] and [`crate::observe::export::losses`]); a failed batch is also logged.

use std::time::Duration;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, Key, KeyValue, global};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing_subscriber::registry::LookupSpan;

use crate::observe::export::client::RetryingClient;
use crate::observe::export::losses::Losses;
use crate::observe::export::queue::{Counted, Gate, GatedSpans, capacity_from_env};
use crate::observe::otel_env::OtelEnv;
use crate::observe::traces::sampling::{Sampler, SkipProbes};

/// The tracer provider of this process. Shut it down to flush the last batch.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    service: &'static str,
    sampler: Sampler,
    losses: &'static Losses,
}

/// The semantic conventions the spans follow (the stable HTTP conventions), as the schema
/// URL of the resource and of the instrumentation scope.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.26.0";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the environment asks for spans to be exported: an endpoint, and the SDK not
/// disabled.
pub fn export_configured(settings: &OtelEnv) -> bool {
    !settings.sdk_disabled
        && [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|name| env(name).is_some())
}

/// The process's resource: `service.name`, `service.version` and a `service.instance.id`
/// unique to this process, then the attributes of `OTEL_RESOURCE_ATTRIBUTES` (any of those
/// three among them), then `OTEL_SERVICE_NAME`, which the SDK specification says wins over
/// a `service.name` given in `OTEL_RESOURCE_ATTRIBUTES`; and the SDK's own `telemetry.sdk.*`.
pub fn resource(service: &'static str, settings: &OtelEnv) -> Resource {
    // In order of precedence, lowest first: of two attributes with one key, the later wins.
    let attributes = [
        KeyValue::new("service.name", service),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
    ]
    .into_iter()
    .chain(
        settings
            .resource_attributes
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    )
    .chain(
        settings
            .service_name
            .iter()
            .map(|name| KeyValue::new("service.name", name.clone())),
    );
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_schema_url(attributes, SCHEMA_URL)
        .build()
}

/// The `service.name` of `resource` (`default` when it has none), for the log lines and
/// the instrumentation scopes: the name given by `OTEL_SERVICE_NAME` is the name
/// everywhere. Kept for the process's life.
pub fn service_name(resource: &Resource, default: &'static str) -> &'static str {
    match resource.get(&Key::new("service.name")) {
        Some(name) if name.as_str() != default => {
            Box::leak(name.as_str().into_owned().into_boxed_str())
        }
        _ => default,
    }
}

impl Traces {
    /// Builds the provider from the environment and installs the W3C propagators
    /// (TraceContext and Baggage) globally; without them nothing is injected or extracted.
    pub fn init(
        service: &'static str,
        resource: Resource,
        trace_probes: bool,
        env: &OtelEnv,
        losses: &'static Losses,
    ) -> Result<Self, String> {
        let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
        if env.trace_context {
            propagators.push(Box::new(TraceContextPropagator::new()));
        }
        if env.baggage {
            propagators.push(Box::new(BaggagePropagator::new()));
        }
        global::set_text_map_propagator(TextMapCompositePropagator::new(propagators));

        // The sampler OTEL_TRACES_SAMPLER asks for, as the SDK reads it.
        let configured = opentelemetry_sdk::trace::Config::default().sampler;
        let sampler = if trace_probes {
            configured
        } else {
            Box::new(SkipProbes(configured))
        };
        let decides = Sampler::configured(sampler.clone());
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler);
        if env.export_traces && export_configured(env) {
            // Headers and compression come from the standard environment; the timeout is
            // the client's, over each export and its retries.
            let pipeline = &losses.spans;
            let client = RetryingClient::new(env.traces_export_timeout, pipeline)?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
                .map_err(|e| e.to_string())?;
            let capacity = capacity_from_env("OTEL_BSP_MAX_QUEUE_SIZE")?;
            let exporter = Counted::new(OwnFieldsOnly(exporter), pipeline);
            let batch = BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(capacity)
                        .build(),
                )
                .build();
            provider =
                provider.with_span_processor(GatedSpans::new(batch, Gate::new(pipeline, capacity)));
        }
        Ok(Self {
            provider: provider.build(),
            service,
            sampler: decides,
            losses,
        })
    }

    /// The sampler the tracer provider has, for the request layer to decide with before a
    /// span exists (see [`crate::observe::traces::decide`]).
    pub fn sampler(&self) -> Sampler {
        self.sampler.clone()
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let scope = InstrumentationScope::builder(self.service)
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(SCHEMA_URL)
            .build();
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer_with_scope(scope))
            .with_tracked_inactivity(false)
            // Parents come from the tracing span stack, and propagation reads a span's own
            // context (`OpenTelemetrySpanExt::context`), so nothing here reads the
            // OpenTelemetry "current context", and no span's enter (each poll of an
            // instrumented future) attaches it.
            .with_context_activation(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            // A span's status is set from its outcome (see `observe` and B's attempt span),
            // never from an event logged inside it: a retried call that succeeded is green.
            .with_error_events_to_status(false)
            .with_error_records_to_exceptions(false)
    }

    /// Exports what is still batched and stops the exporter thread, waiting at most
    /// `grace` (a collector that hangs cannot hold the process); what is still queued or
    /// being exported then is counted lost. The SDK call blocks, so it runs on the
    /// blocking pool.
    pub async fn shutdown(self, grace: Duration) {
        let provider = self.provider;
        let flushed = tokio::time::timeout(
            grace + Duration::from_millis(100),
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(grace)),
        )
        .await;
        if let Ok(Ok(Err(e))) = flushed {
            // Nothing was configured to export, or the collector is gone: not fatal on exit.
            tracing::debug!(error = %e, "trace provider shutdown");
        }
        // What is still queued or being exported now will not be delivered: counted.
        self.losses.spans.give_up();
    }
}

/// A span exporter whose span events carry only the event's own fields. tracing-opentelemetry
/// adds `level` and `target` to every event, and a named event (`telemetry::event!`) carries
/// its name again as `event`: none of them is the event's own (its severity and place are
/// on its log line), so they go. An event whose name is only its source line
/// (a raw `tracing` event with an `event` field) is named after its `event` field.
#[derive(Debug)]
pub struct OwnFieldsOnly<E>(pub E);

/// Attributes tracing-opentelemetry or `telemetry::event!` add to a span event.
const NOT_OWN: [&str; 3] = ["level", "target", "event"];

impl<E: SpanExporter> SpanExporter for OwnFieldsOnly<E> {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        for span in &mut batch {
            for event in &mut span.events.events {
                own_fields_only(event);
            }
        }
        self.0.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

fn own_fields_only(event: &mut opentelemetry::trace::Event) {
    let named = event
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "event")
        .map(|kv| kv.value.as_str().into_owned());
    if let Some(name) = named
        && event.name.starts_with("event ")
    {
        event.name = name.into();
    }
    event
        .attributes
        .retain(|kv| !NOT_OWN.contains(&kv.key.as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_events_keep_their_own_fields_only() {
        use opentelemetry::trace::Event;
        let attributes = |pairs: &[(&'static str, &'static str)]| {
            pairs
                .iter()
                .map(|(k, v)| KeyValue::new(*k, *v))
                .collect::<Vec<_>>()
        };
        let mut named = Event::new(
            "provider_call_failed",
            std::time::SystemTime::now(),
            attributes(&[
                ("level", "ERROR"),
                ("target", "service_b::provider"),
                ("event", "provider_call_failed"),
                ("error", "timeout"),
            ]),
            0,
        );
        own_fields_only(&mut named);
        assert_eq!(named.name, "provider_call_failed");
        assert_eq!(named.attributes, attributes(&[("error", "timeout")]));
        let mut by_line = Event::new(
            "event src/edge/limits.rs:80",
            std::time::SystemTime::now(),
            attributes(&[("event", "load_shed"), ("level", "WARN")]),
            0,
        );
        own_fields_only(&mut by_line);
        assert_eq!(by_line.name, "load_shed");
        assert!(by_line.attributes.is_empty());
    }

    #[test]
    fn the_resource_takes_otel_service_name_over_resource_attributes() {
        let settings = OtelEnv {
            service_name: Some("named".into()),
            resource_attributes: vec![
                ("service.name".into(), "from-attributes".into()),
                ("service.instance.id".into(), "i-1".into()),
                ("deployment.environment.name".into(), "dev x".into()),
            ],
            ..OtelEnv::default()
        };
        let resource = resource("service-a", &settings);
        let get = |key: &'static str| {
            resource
                .get(&Key::new(key))
                .map(|v| v.as_str().into_owned())
        };
        assert_eq!(get("service.name").as_deref(), Some("named"));
        assert_eq!(get("service.instance.id").as_deref(), Some("i-1"));
        assert_eq!(get("deployment.environment.name").as_deref(), Some("dev x"));
        assert_eq!(
            get("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(get("telemetry.sdk.name").is_some());
        let plain = super::resource("service-a", &OtelEnv::default());
        assert_eq!(
            plain
                .get(&Key::new("service.name"))
                .map(|v| v.as_str().into_owned())
                .as_deref(),
            Some("service-a")
        );
        assert_eq!(plain.schema_url(), Some(SCHEMA_URL));
    }
}
