//! Export, and what telemetry lost: the bounded queues in front of the OTLP exporters, the
//! HTTP client they send with, and the count of every log line, span and log record that
//! never arrived, counted where it was lost.
//!
//! | file | what |
//! |---|---|
//! | [`losses`] | what telemetry lost, counted where it was lost, and published on `/metrics` |
//! | [`notices`] | what was lost, said on stderr at most every ten seconds |
//! | [`queue`] | the bounded, counted queues in front of the OTLP exporters |
//! | [`client`] | the client OTLP exports are sent with: retries within the export timeout, and how a failure ended |

pub mod client;
pub mod losses;
pub mod notices;
pub mod queue;

pub use losses::{ExportError, Losses, Pipeline};
pub use notices::Notices;
