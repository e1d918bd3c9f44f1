//! What telemetry lost, counted where it was lost. A sink that is slow, full or gone never
//! holds up a request: the log line, span or log record is dropped instead, and counted
//! here. Counting is one atomic add on the path that drops; the counts reach `/metrics` when
//! it is read ([`publish`]) and stderr at most once every ten seconds ([`crate::observe::export::notices`]).
//!
//! | what was lost | series |
//! |---|---|
//! | a JSON log line for stdout | `log_lines_dropped_total{reason}`: `queue_full` (stdout is not read fast enough), `write_failed` (stdout is closed or broken), `shutdown` (still queued when the flush grace ran out) |
//! | a span | `otel_sdk_processor_span_processed_total{error_type="queue_full"}` at the export queue, `otel_sdk_exporter_span_exported_total{error_type}` at the collector; at shutdown, `spans_shutdown` on stderr for those still queued or being exported when the flush grace ran out |
//! | an OTLP log record | `otel_sdk_processor_log_processed_total{error_type="queue_full"}`, `otel_sdk_exporter_log_exported_total{error_type}`; `log_records_shutdown` on stderr |
//!
//! The `otel_sdk_*` series follow the OpenTelemetry SDK self-observability conventions
//! (`otel.sdk.processor.span.processed` and its kin): processed without `error_type` counts
//! what was handed to the exporter, exported without `error_type` what the collector took.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Log lines that never reached stdout, by reason.
pub const LOG_LINES_DROPPED: &str = "log_lines_dropped_total";

/// One count of things lost, where it was lost: its series in the recorder (a handle
/// registered once) and its total, which stderr's notices read back (the recorder cannot).
#[derive(Debug)]
pub struct Count {
    total: AtomicU64,
    series: metrics::Counter,
}

impl Default for Count {
    /// A count with no series (a test's, or a service's without a recorder).
    fn default() -> Self {
        Self::of(metrics::Counter::noop())
    }
}

impl Count {
    /// A count that adds to `series` too (at zero from the start, so "nothing lost" is a 0
    /// on a dashboard, not "no data").
    fn of(series: metrics::Counter) -> Self {
        series.increment(0);
        Self {
            total: AtomicU64::new(0),
            series,
        }
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Relaxed);
        self.series.increment(n);
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.total.load(Relaxed)
    }
}

/// JSON log lines for stdout.
#[derive(Debug, Default)]
pub struct LogLines {
    /// Dropped because the queue in front of stdout was full.
    pub queue_full: Count,
    /// Dropped because writing to stdout failed (closed, broken pipe).
    pub write_failed: Count,
    /// Still queued when the flush at shutdown ran out of time.
    pub shutdown: Count,
}

/// One OpenTelemetry signal's pipeline: a bounded queue in front of an exporter.
#[derive(Debug)]
pub struct Pipeline {
    /// Handed to the exporter (processed without error).
    pub processed: Count,
    /// Dropped because the queue was full.
    pub queue_full: Count,
    /// Dropped because the pipeline had already shut down.
    pub already_shutdown: Count,
    /// Taken by the collector.
    pub exported: Count,
    /// Refused by the collector, or not delivered in time, by the exporter's error.
    pub export_failed: [Count; ExportError::ALL.len()],
    /// In the queue now: handed in, not yet handed on to the exporter.
    pub queued: AtomicU64,
    /// Handed to the exporter, its export not ended yet.
    pub exporting: AtomicU64,
    /// Still queued or being exported when the shutdown's export deadline passed.
    pub shutdown: Count,
    /// Whether the shutdown's deadline has passed: what is still under way was counted
    /// in [`Pipeline::shutdown`], and is not counted again however it ends. Read and set
    /// under its lock, with the moves between `queued`, `exporting` and the counts.
    gave_up: std::sync::Mutex<bool>,
    /// How many the queue holds at most (0: the signal is not exported).
    pub capacity: AtomicU64,
    /// How the export under way failed, as its HTTP client saw it (0: it has not), for
    /// the counters: the exporter reports every failure of its client alike.
    last_failure: std::sync::atomic::AtomicU8,
    /// `queued` and `capacity` as gauges, set when `/metrics` is read.
    gauges: [metrics::Gauge; 2],
}

impl Default for Pipeline {
    /// A pipeline with no series.
    fn default() -> Self {
        Self::with(
            |_, _| metrics::Counter::noop(),
            [metrics::Gauge::noop(), metrics::Gauge::noop()],
        )
    }
}

impl Pipeline {
    /// A pipeline whose counts add to the series `counter` registers, by series name and
    /// `error_type` (none: what went through), with its queue's `gauges` (size, capacity).
    fn with(
        counter: impl Fn(Stage, Option<&'static str>) -> metrics::Counter,
        gauges: [metrics::Gauge; 2],
    ) -> Self {
        Self {
            processed: Count::of(counter(Stage::Processor, None)),
            queue_full: Count::of(counter(Stage::Processor, Some("queue_full"))),
            already_shutdown: Count::of(counter(Stage::Processor, Some("already_shutdown"))),
            exported: Count::of(counter(Stage::Exporter, None)),
            export_failed: ExportError::ALL
                .map(|error| Count::of(counter(Stage::Exporter, Some(error.label())))),
            queued: AtomicU64::new(0),
            exporting: AtomicU64::new(0),
            shutdown: Count::default(),
            gave_up: std::sync::Mutex::new(false),
            capacity: AtomicU64::new(0),
            last_failure: std::sync::atomic::AtomicU8::new(0),
            gauges,
        }
    }

    /// The pipeline of `components`, its series registered in the installed recorder.
    fn registered(components: &Components) -> Self {
        let labels = |component: &'static str, error: Option<&'static str>| {
            let mut labels = vec![
                ("otel_component_type", component.to_owned()),
                ("otel_component_name", format!("{component}/0")),
            ];
            if let Some(error) = error {
                labels.push(("error_type", error.to_owned()));
            }
            labels
        };
        let processor = components.processor_type;
        Self::with(
            |stage, error| match stage {
                Stage::Processor => {
                    metrics::counter!(components.processor_metric, &labels(processor, error))
                }
                Stage::Exporter => metrics::counter!(
                    components.exporter_metric,
                    &labels(components.exporter_type, error)
                ),
            },
            [
                metrics::gauge!(components.queue_size, &labels(processor, None)),
                metrics::gauge!(components.queue_capacity, &labels(processor, None)),
            ],
        )
    }

    /// Items in the queue now: handed in, not yet handed on.
    pub fn queue_size(&self) -> u64 {
        self.queued.load(Relaxed)
    }

    /// The shutdown's export deadline has passed: what is still queued or being exported
    /// is counted as lost ([`Pipeline::shutdown`]), once.
    pub fn give_up(&self) {
        let mut gave_up = self.gave_up.lock().unwrap_or_else(|p| p.into_inner());
        if !*gave_up {
            *gave_up = true;
            let unfinished = self.queued.swap(0, Relaxed) + self.exporting.swap(0, Relaxed);
            self.shutdown.add(unfinished);
        }
    }

    /// Runs `count` unless [`Pipeline::give_up`] was called (what ends later was counted
    /// already), never while it runs.
    pub fn unless_given_up(&self, count: impl FnOnce()) {
        let gave_up = self.gave_up.lock().unwrap_or_else(|p| p.into_inner());
        if !*gave_up {
            count();
        }
    }

    /// The export under way failed as `kind` (its HTTP client says so).
    pub fn record_failure(&self, kind: ExportError) {
        let code = ExportError::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| i + 1);
        self.last_failure.store(code as u8, Relaxed);
    }

    /// How the export that just ended failed, as its client said, if it did; cleared for
    /// the next. The exports of one pipeline run one at a time.
    pub fn take_failure(&self) -> Option<ExportError> {
        let code = self.last_failure.swap(0, Relaxed);
        ExportError::ALL
            .get(usize::from(code).checked_sub(1)?)
            .copied()
    }
}

/// Why an export failed, as `error_type`: its client's word when it left one (see
/// [`Pipeline::record_failure`]), else what the exporter's error says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportError {
    /// No connection to the collector could be made, or it broke.
    Network,
    /// The collector answered with an error status (after the retries a retryable one
    /// gets).
    Rejected,
    /// No answer within the export timeout.
    Timeout,
    /// The exporter was already shut down.
    AlreadyShutdown,
    /// Anything else (the batch could not even be encoded).
    Internal,
}

impl ExportError {
    /// Every kind, in the order of [`Pipeline::export_failed`].
    pub const ALL: [Self; 5] = [
        Self::Network,
        Self::Rejected,
        Self::Timeout,
        Self::AlreadyShutdown,
        Self::Internal,
    ];

    /// The kind of an SDK export error.
    pub fn of(error: &opentelemetry_sdk::error::OTelSdkError) -> Self {
        use opentelemetry_sdk::error::OTelSdkError;
        match error {
            OTelSdkError::Timeout(_) => Self::Timeout,
            OTelSdkError::AlreadyShutdown => Self::AlreadyShutdown,
            OTelSdkError::InternalFailure(message) if message.contains("network error") => {
                Self::Network
            }
            OTelSdkError::InternalFailure(message) if message.contains("status code") => {
                Self::Rejected
            }
            OTelSdkError::InternalFailure(message) if message.contains("already shutdown") => {
                Self::AlreadyShutdown
            }
            OTelSdkError::InternalFailure(_) => Self::Internal,
        }
    }

    /// The `error_type` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Network => "network_error",
            Self::Rejected => "rejected",
            Self::Timeout => "timeout",
            Self::AlreadyShutdown => "already_shutdown",
            Self::Internal => "internal",
        }
    }
}

/// Where a pipeline's count is taken: at its queue (the processor) or at its exporter.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Processor,
    Exporter,
}

/// Everything this process lost, per signal.
#[derive(Debug, Default)]
pub struct Losses {
    /// Stdout.
    pub log_lines: LogLines,
    /// OTLP spans.
    pub spans: Pipeline,
    /// OTLP log records.
    pub log_records: Pipeline,
}

impl Losses {
    /// A new set of counts that lives as long as the process: the threads that count into
    /// it (the stdout writer, the exporters' batch threads) may outlive whoever started
    /// them. One per [`crate::observe::init`] (or per in-process service), held by each sink
    /// and by the metrics that publish it: nothing reads it from a process-wide place.
    /// Its counts have no series: a test's, or a service's run inside a test process.
    pub fn leaked() -> &'static Self {
        Box::leak(Box::default())
    }

    /// The same, each count adding to its series in the installed recorder (see the module
    /// docs), described once: call it once the recorder is installed.
    pub fn registered() -> &'static Self {
        describe_series();
        let line = |reason: &'static str| {
            Count::of(metrics::counter!(LOG_LINES_DROPPED, "reason" => reason))
        };
        Box::leak(Box::new(Self {
            log_lines: LogLines {
                queue_full: line("queue_full"),
                write_failed: line("write_failed"),
                shutdown: line("shutdown"),
            },
            spans: Pipeline::registered(&SPANS),
            log_records: Pipeline::registered(&LOG_RECORDS),
        }))
    }
}

/// The `otel.component.*` attributes of one pipeline's processor and exporter.
struct Components {
    processor_metric: &'static str,
    processor_type: &'static str,
    exporter_metric: &'static str,
    exporter_type: &'static str,
    queue_size: &'static str,
    queue_capacity: &'static str,
}

const SPANS: Components = Components {
    processor_metric: "otel_sdk_processor_span_processed_total",
    processor_type: "batching_span_processor",
    exporter_metric: "otel_sdk_exporter_span_exported_total",
    exporter_type: "otlp_http_span_exporter",
    queue_size: "otel_sdk_processor_span_queue_size",
    queue_capacity: "otel_sdk_processor_span_queue_capacity",
};

const LOG_RECORDS: Components = Components {
    processor_metric: "otel_sdk_processor_log_processed_total",
    processor_type: "batching_log_processor",
    exporter_metric: "otel_sdk_exporter_log_exported_total",
    exporter_type: "otlp_http_log_exporter",
    queue_size: "otel_sdk_processor_log_queue_size",
    queue_capacity: "otel_sdk_processor_log_queue_capacity",
};

/// Help text for every series, once, at start-up.
fn describe_series() {
    metrics::describe_counter!(
        LOG_LINES_DROPPED,
        "JSON log lines that never reached stdout, by reason: queue_full (stdout not read fast enough), write_failed (stdout closed), shutdown (still queued when the flush grace ran out)"
    );
    for (components, what) in [(&SPANS, "spans"), (&LOG_RECORDS, "log records")] {
        metrics::describe_counter!(
            components.processor_metric,
            format!(
                "OTLP {what} handed to the exporter, or dropped with error_type (queue_full: the export queue was full)"
            )
        );
        metrics::describe_counter!(
            components.exporter_metric,
            format!("OTLP {what} the collector took, or lost with error_type")
        );
        metrics::describe_gauge!(
            components.queue_size,
            format!("OTLP {what} waiting in the export queue")
        );
        metrics::describe_gauge!(
            components.queue_capacity,
            format!("Most OTLP {what} the export queue holds")
        );
    }
}

/// Sets the queues' gauges from what they hold now (called when `/metrics` is read, so
/// nothing on the request path touches the recorder). The counts need nothing: each adds to
/// its series as it counts.
pub fn publish(losses: &Losses) {
    for pipeline in [&losses.spans, &losses.log_records] {
        let [size, capacity] = &pipeline.gauges;
        size.set(pipeline.queue_size() as f64);
        capacity.set(pipeline.capacity.load(Relaxed) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_errors_are_classified_by_what_the_exporter_says() {
        use opentelemetry_sdk::error::OTelSdkError;
        let failure = |text: &str| ExportError::of(&OTelSdkError::InternalFailure(text.into()));
        // The texts of opentelemetry-otlp's HTTP exporter.
        assert_eq!(
            failure("HTTP export failed: network error"),
            ExportError::Network
        );
        assert_eq!(
            failure("HTTP export failed with status code: 503"),
            ExportError::Rejected
        );
        assert_eq!(
            failure("Exporter already shutdown"),
            ExportError::AlreadyShutdown
        );
        assert_eq!(failure("encoding failed"), ExportError::Internal);
        assert_eq!(
            ExportError::of(&OTelSdkError::Timeout(std::time::Duration::from_secs(1))),
            ExportError::Timeout
        );
        assert_eq!(
            ExportError::of(&OTelSdkError::AlreadyShutdown),
            ExportError::AlreadyShutdown
        );
    }
}
