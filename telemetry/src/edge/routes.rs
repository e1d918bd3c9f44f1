//! The routes every service serves besides its own: `GET /health` (liveness),
//! `GET /metrics` (JSON for curl, Prometheus text or OpenMetrics for a scrape) and
//! `GET /openapi.json` (the service's API description). The server never sheds
//! `/health`; `/metrics` has places of its own (`--max-scrapes`; see
//! [`crate::edge::limits`]).
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
use crate::observe::metrics::PROMETHEUS_CONTENT_TYPE;
use crate::observe::metrics::exemplars::OPENMETRICS_CONTENT_TYPE;
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

/// Why no representation was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `?format=` names no format: 400.
    UnknownFormat(String),
    /// `Accept` allows none of the three (every one at `q=0`, or none named): 406.
    NotAcceptable,
}

impl Format {
    /// Each format with the media type it is served as, in the order that breaks a tie
    /// (`*/*` from curl gets JSON).
    const BY_PREFERENCE: [(Self, &'static str); 3] = [
        (Self::Json, "application/json"),
        (Self::OpenMetrics, "application/openmetrics-text"),
        (Self::Prometheus, "text/plain"),
    ];

    /// Chooses from `?format=` (which wins) and the `Accept` header (RFC 9110 12.5.1): each
    /// format gets the `q` of the most specific media range that matches it (`type/subtype`
    /// over `type/*` over `*/*`), `q=0` meaning not acceptable; the highest wins, ties by
    /// [`Self::BY_PREFERENCE`]. No header, or an empty one, accepts anything.
    pub fn negotiate(query: Option<&str>, accept: Option<&str>) -> Result<Self, Refusal> {
        match query {
            Some("json") => return Ok(Self::Json),
            Some("prometheus") => return Ok(Self::Prometheus),
            Some("openmetrics") => return Ok(Self::OpenMetrics),
            Some(other) => return Err(Refusal::UnknownFormat(other.to_owned())),
            None => {}
        }
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Ok(Self::Json);
        };
        let ranges: Vec<(&str, &str, f64)> = accept.split(',').filter_map(media_range).collect();
        let q_of = |media: &str| {
            let (kind, subtype) = media.split_once('/').unwrap_or((media, ""));
            ranges
                .iter()
                .filter_map(|(k, s, q)| {
                    let specificity = match (*k, *s) {
                        (k, s)
                            if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) =>
                        {
                            2
                        }
                        (k, "*") if k.eq_ignore_ascii_case(kind) => 1,
                        ("*", "*") => 0,
                        _ => return None,
                    };
                    Some((specificity, *q))
                })
                .max_by(|a, b| a.0.cmp(&b.0))
                .map_or(0.0, |(_, q)| q)
        };
        let mut best: Option<(Self, f64)> = None;
        for (format, media) in Self::BY_PREFERENCE {
            let q = q_of(media);
            if q > 0.0 && best.is_none_or(|(_, top)| q > top) {
                best = Some((format, q));
            }
        }
        best.map(|(format, _)| format).ok_or(Refusal::NotAcceptable)
    }
}

/// One media range of an `Accept` header: type, subtype, and its `q` (1 when absent; a
/// malformed `q` counts as 0, not acceptable).
fn media_range(range: &str) -> Option<(&str, &str, f64)> {
    let mut parts = range.split(';').map(str::trim);
    let (kind, subtype) = parts.next()?.split_once('/')?;
    let mut q = 1.0;
    for parameter in parts {
        if let Some((name, value)) = parameter.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            q = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(0.0);
        }
    }
    Some((kind.trim(), subtype.trim(), q))
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
            let format = Format::negotiate(query.format.as_deref(), accept);
            // Rendering is a burst of work with nothing to wait for: it runs off the
            // runtime's workers, so a scrape never holds up a request, and the scrapes at
            // once are what `--max-scrapes` bounds.
            let metrics = metrics.clone();
            let rendered = tokio::task::spawn_blocking(move || match format {
                Ok(Format::Json) => Ok(Json(json_view(metrics.tally())).into_response()),
                Ok(Format::Prometheus) => Ok((
                    [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                    metrics.render_prometheus(),
                )
                    .into_response()),
                Ok(Format::OpenMetrics) => Ok((
                    [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    metrics.render_openmetrics(),
                )
                    .into_response()),
                Err(refusal) => Err(refusal),
            })
            .await;
            let mut response = match rendered {
                Ok(Ok(response)) => response,
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed"),
                Ok(Err(Refusal::UnknownFormat(other))) => error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown format {other:?}: use format=json, format=prometheus or format=openmetrics"
                    ),
                ),
                Ok(Err(Refusal::NotAcceptable)) => error(
                    StatusCode::NOT_ACCEPTABLE,
                    "Accept allows none of application/json, application/openmetrics-text and text/plain",
                ),
            };
            // The answer depends on Accept: caches must keep one per value.
            response
                .headers_mut()
                .insert(header::VARY, http::HeaderValue::from_static("accept"));
            response
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
    fn q_values_choose_and_q_zero_refuses() {
        for (accept, chosen) in [
            (
                "application/openmetrics-text;q=0, text/plain",
                Ok(Format::Prometheus),
            ),
            (
                "text/plain;q=1, application/openmetrics-text;q=0.1",
                Ok(Format::Prometheus),
            ),
            ("text/*;q=0.9, */*;q=0.1", Ok(Format::Prometheus)),
            (
                "text/html,application/xhtml+xml,*/*;q=0.8",
                Ok(Format::Json),
            ),
            ("application/json;q=0, */*", Ok(Format::OpenMetrics)),
            ("image/png", Err(Refusal::NotAcceptable)),
            ("*/*;q=0", Err(Refusal::NotAcceptable)),
            ("", Ok(Format::Json)),
        ] {
            assert_eq!(Format::negotiate(None, Some(accept)), chosen, "{accept:?}");
        }
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
