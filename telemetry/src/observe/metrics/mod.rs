//! Metrics: written once with the `metrics` macros, kept by one recorder per process, and
//! read three ways on `GET /metrics` (OpenMetrics with exemplars, the Prometheus text, a
//! JSON summary).
//!
//! | file | what |
//! |---|---|
//! | [`recorder`] | the recorder, its buckets, the metric names both services share, and the three renderings |
//! | [`exemplars`] | the trace behind a histogram bucket, and OpenMetrics |
//! | [`process`] | the process's CPU, memory, descriptors and threads, from `/proc` |

pub mod exemplars;
pub mod process;
pub mod recorder;

pub use exemplars::{ExemplarHistogram, Exemplars, OPENMETRICS_CONTENT_TYPE};
pub use recorder::{
    CLIENT_DURATION, Exposition, LATENCY_BUCKETS, Metrics, PROMETHEUS_CONTENT_TYPE, SERVER_ACTIVE,
    SERVER_DURATION, SERVER_REQUESTS, Tally, buckets, timeout_bounds,
};
