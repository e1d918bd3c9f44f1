//! Traces: `tracing` spans become OpenTelemetry spans, sampled before they are built, joined
//! across services by W3C trace context, and exported over OTLP/HTTP.
//!
//! | file | what |
//! |---|---|
//! | [`provider`] | the tracer provider: resource, OTLP export, the `tracing` layer, shutdown |
//! | [`sampling`] | whether a request is recorded, decided before its span exists |
//! | [`ids`] | a span's W3C ids as log lines, `traceresponse` and exemplars write them |
//! | [`propagation`] | W3C trace context and baggage read from and written into headers |
//! | [`caller`] | how a request's span joins, restarts or ignores its caller's trace |
//! | [`forwarded`] | what of a caller's trace context goes on to a callee, within W3C's bounds |

pub mod caller;
pub mod forwarded;
pub mod ids;
pub mod propagation;
pub mod provider;
pub mod sampling;

pub use caller::{Caller, CallerTraceContext};
pub use ids::{SpanIds, current_ids, span_ids};
pub use propagation::{Propagation, extract, inject};
pub use provider::{OwnFieldsOnly, SCHEMA_URL, Traces, export_configured, resource, service_name};
pub use sampling::{Decision, InsideRecorded, Sampler, UNRECORDED, decide, new_span_id};
