//! The routes every service serves besides its own: `GET /health` (liveness),
//! `GET /metrics` (JSON for curl, Prometheus text or OpenMetrics for a scrape) and
//! `GET /openapi.json` (the service's API description). The server never sheds them.
//!
//! Which format a `/metrics` request gets: `?format=json|prometheus|openmetrics` wins;
//! otherwise an `Accept` header naming `application/openmetrics-text` (what Prometheus
//! prefers) gets OpenMetrics, one naming `text/plain` the text format, and everything
//! else (`*/*` from curl, no header) JSON.

use axum::extract::Query;
use axum::response::IntoResponse as _;
use axum::routing::{MethodRouter, get};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::edge::http::{ErrorBody, Json, error};
use crate::observe::exemplars::OPENMETRICS_CONTENT_TYPE;
use crate::observe::metrics::PROMETHEUS_CONTENT_TYPE;
use crate::observe::{Metrics, Tally};

/// Body of `GET /health`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `"ok"` while the process serves requests.
    #[schema(value_type = String, pattern = "^ok$")]
    pub status: &'static str,
}

/// `GET /health`: 200 `{"status":"ok"}` while the process serves requests. It checks
/// nothing beyond the process itself: B stays healthy while A is down (and says why in its
/// 503s), so an orchestrator never restarts B for A's outage.
#[utoipa::path(
    get,
    path = "/health",
    tag = "probes",
    summary = "Liveness: the process serves requests",
    responses((status = 200, description = "The process serves requests.", body = Health)),
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /openapi.json`: this description, served as built at start-up.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "probes",
    summary = "This API description (OpenAPI 3.1)",
    responses((status = 200, description = "The OpenAPI 3.1 description of this service.",
               content_type = "application/json", body = Object)),
)]
pub fn openapi_endpoint<S>(description: Value) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let description = std::sync::Arc::new(description);
    get(move || {
        let description = description.clone();
        async move { Json(description.as_ref().clone()) }
    })
}

/// Which representation a `/metrics` request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The service's JSON summary.
    Json,
    /// Prometheus text exposition format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0, with exemplars.
    OpenMetrics,
}

impl Format {
    /// Chooses from `?format=` (which wins) and the `Accept` header; see the module docs.
    pub fn negotiate(query: Option<&str>, accept: Option<&str>) -> Result<Self, String> {
        match query {
            Some("json") => return Ok(Self::Json),
            Some("prometheus") => return Ok(Self::Prometheus),
            Some("openmetrics") => return Ok(Self::OpenMetrics),
            Some(other) => {
                return Err(format!(
                    "unknown format {other:?}: use format=json, format=prometheus or format=openmetrics"
                ));
            }
            None => {}
        }
        let names = |wanted: &str| {
            accept.is_some_and(|accept| {
                accept.split(',').any(|range| {
                    let media = range.split(';').next().unwrap_or_default().trim();
                    media.eq_ignore_ascii_case(wanted)
                })
            })
        };
        Ok(if names("application/openmetrics-text") {
            Self::OpenMetrics
        } else if names("text/plain") {
            Self::Prometheus
        } else {
            Self::Json
        })
    }
}

#[derive(Debug, Deserialize)]
struct MetricsQuery {
    format: Option<String>,
}

/// `format` of `GET /metrics`, for the API description.
#[derive(Debug, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum MetricsFormat {
    /// The service's counters as JSON (the default for curl and browsers).
    Json,
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0, with exemplars.
    Openmetrics,
}

/// The `GET /metrics` route. `json_view` builds the service's JSON summary from the tally.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    summary = "The service's counters: JSON for curl, Prometheus text or OpenMetrics for a scrape",
    params(
        ("format" = Option<MetricsFormat>, Query,
         description = "Forces a format; without it, `Accept` chooses (`application/openmetrics-text`, then `text/plain`; JSON otherwise)."),
    ),
    responses(
        (status = 200, description = "The counters, in the format asked for.",
         content(
             (Object = "application/json"),
             (String = "text/plain; version=0.0.4; charset=utf-8"),
             (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
         )),
        (status = 400, description = "An unknown `format`, or a malformed query string.",
         body = ErrorBody),
    ),
)]
pub fn metrics_endpoint<S>(
    metrics: Metrics,
    json_view: fn(&Tally) -> serde_json::Value,
) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(
        move |query: Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
              headers: HeaderMap| async move {
            let Ok(Query(query)) = query else {
                return error(StatusCode::BAD_REQUEST, "malformed query string");
            };
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            match Format::negotiate(query.format.as_deref(), accept) {
                Ok(Format::Json) => Json(json_view(metrics.tally())).into_response(),
                Ok(Format::Prometheus) => (
                    [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                    metrics.render_prometheus(),
                )
                    .into_response(),
                Ok(Format::OpenMetrics) => (
                    [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    metrics.render_openmetrics(),
                )
                    .into_response(),
                Err(message) => error(StatusCode::BAD_REQUEST, message),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_and_browsers_get_json() {
        assert_eq!(Format::negotiate(None, Some("*/*")), Ok(Format::Json));
        assert_eq!(Format::negotiate(None, None), Ok(Format::Json));
        assert_eq!(
            Format::negotiate(None, Some("application/json")),
            Ok(Format::Json)
        );
    }

    #[test]
    fn a_prometheus_scrape_gets_text() {
        let scrape = "application/openmetrics-text;version=1.0.0;q=0.5,\
                      application/openmetrics-text;version=0.0.1;q=0.4,\
                      text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(
            Format::negotiate(None, Some(scrape)),
            Ok(Format::OpenMetrics)
        );
        assert_eq!(
            Format::negotiate(None, Some("text/plain;version=0.0.4;q=0.3,*/*;q=0.2")),
            Ok(Format::Prometheus)
        );
        assert_eq!(
            Format::negotiate(None, Some("text/plain")),
            Ok(Format::Prometheus)
        );
    }

    #[test]
    fn the_query_wins_and_unknown_formats_are_refused() {
        assert_eq!(
            Format::negotiate(Some("json"), Some("text/plain")),
            Ok(Format::Json)
        );
        assert_eq!(
            Format::negotiate(Some("prometheus"), None),
            Ok(Format::Prometheus)
        );
        assert!(Format::negotiate(Some("xml"), None).is_err());
    }
}
