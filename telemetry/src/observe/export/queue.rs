//! The bounded queues in front of the OTLP exporters, with every item counted on its way.
//!
//! The SDK's batch processors drop an item when their queue is full and say so only in their
//! own diagnostics, once. Here a [`Gate`] of the same capacity stands in front of each: it
//! admits an item only while fewer than the capacity are waiting, and counts the ones it
//! turns away (`queue_full`). An item leaves the count when the exporter receives it, which
//! is after it left the SDK's queue, so the SDK's queue can never be the one that is full:
//! every drop is a counted drop. The exporter wrapper ([`Counted`]) counts what the
//! collector took or refused. See [`crate::observe::export::losses`] for the series.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, LogProcessor, SdkLogRecord};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use crate::observe::export::losses::{ExportError, Pipeline};

/// The default capacity of the SDK's batch queues (`OTEL_BSP_MAX_QUEUE_SIZE`,
/// `OTEL_BLRP_MAX_QUEUE_SIZE`).
pub const DEFAULT_CAPACITY: usize = 2048;

/// The queue capacity `variable` asks for (the default when unset); an unusable value is
/// refused, naming the variable.
pub fn capacity_from_env(variable: &str) -> Result<usize, String> {
    match std::env::var(variable) {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{variable}={text} is not supported: a queue size must be a whole number above 0"
            )),
        },
        _ => Ok(DEFAULT_CAPACITY),
    }
}

/// Admission to one pipeline's queue.
#[derive(Debug)]
pub struct Gate {
    pipeline: &'static Pipeline,
    capacity: u64,
    shut: AtomicBool,
}

impl Gate {
    /// A gate of `capacity` items for `pipeline`.
    pub fn new(pipeline: &'static Pipeline, capacity: usize) -> Self {
        let capacity = capacity as u64;
        pipeline.capacity.store(capacity, Relaxed);
        Self {
            pipeline,
            capacity,
            shut: AtomicBool::new(false),
        }
    }

    /// Whether one more item may go into the queue; counted if not.
    pub fn admit(&self) -> bool {
        if self.shut.load(Relaxed) {
            self.pipeline.already_shutdown.add(1);
            return false;
        }
        if self.pipeline.queued.fetch_add(1, Relaxed) >= self.capacity {
            self.pipeline.queued.fetch_sub(1, Relaxed);
            self.pipeline.queue_full.add(1);
            return false;
        }
        true
    }

    /// No more items are admitted.
    pub fn close(&self) {
        self.shut.store(true, Relaxed);
    }
}

/// Counts what an exporter receives and what became of it.
#[derive(Debug)]
pub struct Counted<E> {
    inner: E,
    pipeline: &'static Pipeline,
}

impl<E> Counted<E> {
    /// `inner`, counted into `pipeline`.
    pub fn new(inner: E, pipeline: &'static Pipeline) -> Self {
        Self { inner, pipeline }
    }

    /// `n` items have left the queue for the exporter. Past the shutdown's deadline they
    /// were counted lost already, and are not counted again.
    fn received(&self, n: usize) {
        let n = n as u64;
        self.pipeline.unless_given_up(|| {
            self.pipeline.queued.fetch_sub(n, Relaxed);
            self.pipeline.exporting.fetch_add(n, Relaxed);
            self.pipeline.processed.add(n);
        });
    }

    /// What became of `n` items the exporter tried to deliver: the kind of failure, if it
    /// failed. Past the shutdown's deadline nothing is counted (they were counted lost).
    fn delivered(&self, n: usize, result: &OTelSdkResult) -> Option<ExportError> {
        let n = n as u64;
        let kind = match result {
            Ok(()) => {
                let _ = self.pipeline.take_failure();
                None
            }
            Err(error) => Some(
                self.pipeline
                    .take_failure()
                    .unwrap_or_else(|| ExportError::of(error)),
            ),
        };
        self.pipeline.unless_given_up(|| {
            self.pipeline.exporting.fetch_sub(n, Relaxed);
            match kind {
                None => self.pipeline.exported.add(n),
                Some(kind) => {
                    if let Some(index) = ExportError::ALL.iter().position(|k| *k == kind) {
                        self.pipeline.export_failed[index].add(n);
                    }
                }
            }
        });
        kind
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.received(spans);
        let result = self.inner.export(batch).await;
        if let (Some(kind), Err(error)) = (self.delivered(spans, &result), &result) {
            // One line per failed batch (every few seconds at most): the log says what the
            // counters cannot, the collector's error.
            crate::event!(WARN, "span_export_failed", error = %error,
                error_type = kind.label(), spans_dropped = spans as i64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Counted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let records = batch.iter().count();
        self.received(records);
        let result = self.inner.export(batch).await;
        // Not logged: a log line about failing to export log lines would be exported too.
        // The counters and the stderr notice say it.
        let _ = self.delivered(records, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A span processor admitting spans to `inner` through a [`Gate`].
#[derive(Debug)]
pub struct GatedSpans<P> {
    inner: P,
    gate: Gate,
}

impl<P> GatedSpans<P> {
    /// `inner` behind `gate`.
    pub fn new(inner: P, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

impl<P: SpanProcessor> SpanProcessor for GatedSpans<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.gate.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.gate.close();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A log processor admitting records to `inner` through a [`Gate`].
#[derive(Debug)]
pub struct GatedLogs<P> {
    inner: P,
    gate: Gate,
}

impl<P> GatedLogs<P> {
    /// `inner` behind `gate`.
    pub fn new(inner: P, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

impl<P: LogProcessor> LogProcessor for GatedLogs<P> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if self.gate.admit() {
            self.inner.emit(record, scope);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.gate.close();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> &'static Pipeline {
        Box::leak(Box::default())
    }

    #[test]
    fn the_gate_admits_up_to_its_capacity_and_counts_the_rest() {
        let pipeline = pipeline();
        let gate = Gate::new(pipeline, 3);
        let admitted = (0..10).filter(|_| gate.admit()).count();
        assert_eq!(admitted, 3);
        assert_eq!(pipeline.queue_full.get(), 7);
        assert_eq!(pipeline.queue_size(), 3);
        let exporter = Counted::new((), pipeline);
        exporter.received(3);
        assert_eq!(pipeline.queue_size(), 0);
        assert_eq!(pipeline.processed.get(), 3);
        assert!(gate.admit(), "room again once the exporter took the batch");
        gate.close();
        assert!(!gate.admit());
        assert_eq!(pipeline.already_shutdown.get(), 1);
    }

    #[test]
    fn exports_are_counted_by_outcome() {
        use opentelemetry_sdk::error::OTelSdkError;
        let pipeline = pipeline();
        let exporter = Counted::new((), pipeline);
        exporter.received(9);
        assert_eq!(exporter.delivered(5, &Ok(())), None);
        assert_eq!(
            exporter.delivered(4, &Err(OTelSdkError::Timeout(Duration::from_secs(1)))),
            Some(ExportError::Timeout)
        );
        assert_eq!(pipeline.exported.get(), 5);
        let timeout = ExportError::ALL
            .iter()
            .position(|k| *k == ExportError::Timeout)
            .expect("a kind");
        assert_eq!(pipeline.export_failed[timeout].get(), 4);
        assert_eq!(pipeline.exporting.load(Relaxed), 0);
    }

    /// At the shutdown's deadline, what is queued or being exported is counted lost once,
    /// and however those exports end later, nothing is counted twice.
    #[test]
    fn what_is_unfinished_at_the_deadline_is_counted_once() {
        let pipeline = pipeline();
        let gate = Gate::new(pipeline, 100);
        assert_eq!((0..10).filter(|_| gate.admit()).count(), 10);
        let exporter = Counted::new((), pipeline);
        exporter.received(4);
        pipeline.give_up();
        pipeline.give_up();
        assert_eq!(pipeline.shutdown.get(), 10, "6 queued and 4 being exported");
        exporter.received(6);
        assert_eq!(exporter.delivered(4, &Ok(())), None);
        assert_eq!(pipeline.exported.get(), 0);
        assert_eq!(pipeline.processed.get(), 4);
    }

    #[test]
    fn queue_sizes_from_the_environment_are_checked() {
        // An unset variable: the SDK's default.
        assert_eq!(
            capacity_from_env("TELEMETRY_TEST_UNSET_QUEUE_SIZE"),
            Ok(DEFAULT_CAPACITY)
        );
    }
}
