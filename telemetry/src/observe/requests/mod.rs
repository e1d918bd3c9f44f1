//! Requests: one request in and one call out, each observed once: its span, its log line,
//! its metric samples, and the request id that ties them together across services.
//!
//! | file | what |
//! |---|---|
//! | [`layer`] | one request in: one server span, one log line, one set of metric samples (the tower layer) |
//! | [`server_span`] | the server span's attributes: method, route, host, client, the query with its values redacted |
//! | [`series`] | the server's request series, registered once per route and outcome, and the known methods |
//! | [`id`] | `X-Request-ID`: validated or generated, echoed |
//! | [`outbound`] | one call out: client span, trace context on the request, duration (a reqwest-middleware middleware) |

pub mod id;
pub mod layer;
pub mod outbound;
pub mod series;
pub mod server_span;

pub use id::{HEADER as REQUEST_ID_HEADER, RequestId};
pub use layer::{
    ATTEMPT_HEADER, AttemptHeader, CLIENT_CLOSED_REQUEST, ClientAddress, Observation,
    TIMEOUT_HEADER, TRACERESPONSE,
};
pub use outbound::{Classify, ClientCalls, Observed, Outbound};
pub use series::KnownMethods;
pub use server_span::{DeclaredQuery, REDACTED, redacted_query};
