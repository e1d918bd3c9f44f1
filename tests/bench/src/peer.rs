//! THE IDIOMATIC PEER. Not part of the system: the same work as services A and B, instrumented
//! the way the ecosystem's documentation and examples show it, with this workspace's crate
//! versions, so the benchmark can set what this project's instrumentation costs next to what
//! a Rust developer gets by following the docs:
//!
//! - axum, with tower-http's `SetRequestIdLayer`, `TraceLayer` and `PropagateRequestIdLayer`
//!   stacked as in axum's `request-id` example; the caller's W3C trace joined with the global
//!   propagator and `OpenTelemetrySpanExt::set_parent`, as tracing-opentelemetry's docs show;
//! - `tracing_subscriber::fmt::layer().json()` on stdout, one line per request like the
//!   services (`TraceLayer`'s response event raised to INFO under an `info` filter; the
//!   examples' development filter, `tower_http=debug`, would log two), beside the
//!   `tracing-opentelemetry` layer over the SDK's tracer provider. The sampler is the SDK's
//!   own default: parent-based always-on, or what `OTEL_TRACES_SAMPLER` and
//!   `OTEL_TRACES_SAMPLER_ARG` ask for. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans leave
//!   over OTLP/HTTP through the batch processor;
//! - metrics-exporter-prometheus with the middleware of axum's `prometheus-metrics` example
//!   (`http_requests_total`, `http_requests_duration_seconds` with its buckets, upkeep every
//!   5 s) and `GET /metrics`;
//! - B: reqwest-middleware with reqwest-tracing's `TracingMiddleware` (a client span, and
//!   `traceparent` injected through the global propagator) and reqwest-retry's
//!   `RetryTransientMiddleware`, stacked as reqwest-middleware's README does; 1 s timeout per
//!   attempt, two attempts with a 5–10 ms backoff, like service B's defaults.
//!
//! What the default way leaves out, and so does the peer: limits and timeouts at the edge,
//! validation beyond the JSON's shape, the login throttle, B's deadline, retry budget and
//! circuit breaker, exemplars, the lab's log fields. Passwords are compared as plain strings,
//! as in the baseline (the services compare SHA-256 digests, about 4k instructions).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_tracing::TracingMiddleware;
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const REQUEST_ID_HEADER: &str = "x-request-id";

/// A's request body.
#[derive(Deserialize, Serialize)]
struct Credentials {
    username: String,
    password: String,
}

/// B's request body.
#[derive(Deserialize)]
struct ActionRequest {
    username: String,
    password: String,
    #[serde(default)]
    action: Option<String>,
}

/// A's answer.
#[derive(Deserialize, Serialize)]
struct Grant {
    token: String,
    user: String,
}

/// B's answer, in the services' key order.
#[derive(Serialize)]
struct Combined {
    action: String,
    consumer: &'static str,
    request_id: String,
    token: String,
    user: String,
}

/// Every error answer: `{"error": "..."}`.
type ApiError = (StatusCode, Json<serde_json::Value>);

fn error(status: StatusCode, message: &str) -> ApiError {
    (status, Json(serde_json::json!({ "error": message })))
}

/// `POST /token`: the deterministic token for the demo user, 401 for anything else.
async fn token(Json(credentials): Json<Credentials>) -> Result<Json<Grant>, ApiError> {
    if credentials.username != "divya" || credentials.password != "pass123" {
        return Err(error(StatusCode::UNAUTHORIZED, "invalid credentials"));
    }
    Ok(Json(Grant {
        token: format!("token-{}", credentials.username),
        user: credentials.username,
    }))
}

/// B's way to A: the client with its middleware, and A's `/token` URL.
#[derive(Clone)]
struct Provider {
    client: ClientWithMiddleware,
    token_url: String,
}

/// `POST /protected-action`: a token from A for the caller's credentials, and the combined
/// answer. A's 401 is passed on; anything else that is not a grant is a 503.
async fn protected_action(
    State(provider): State<Provider>,
    headers: HeaderMap,
    Json(request): Json<ActionRequest>,
) -> Result<Json<Combined>, ApiError> {
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let reply = provider
        .client
        .post(&provider.token_url)
        .header(REQUEST_ID_HEADER, &request_id)
        .json(&Credentials {
            username: request.username,
            password: request.password,
        })
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "calling the provider failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "provider unavailable")
        })?;
    match reply.status() {
        status if status.is_success() => {}
        StatusCode::UNAUTHORIZED => {
            return Err(error(StatusCode::UNAUTHORIZED, "invalid credentials"));
        }
        _ => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider unavailable",
            ));
        }
    }
    let grant: Grant = reply
        .json()
        .await
        .map_err(|_| error(StatusCode::BAD_GATEWAY, "bad answer from the provider"))?;
    Ok(Json(Combined {
        action: request.action.unwrap_or_else(|| "ping".to_owned()),
        consumer: "ok",
        request_id,
        token: grant.token,
        user: grant.user,
    }))
}

/// Logs and traces: a JSON fmt layer and the OpenTelemetry layer on one registry. Returns the
/// provider, to be shut down (flushing its spans) when the server stops.
fn init_telemetry(service: &'static str) -> Result<SdkTracerProvider, String> {
    // Without a propagator nothing is extracted or injected.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // The builder's default configuration reads OTEL_TRACES_SAMPLER and _ARG.
    let mut provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        // Reads OTEL_EXPORTER_OTLP_ENDPOINT and appends /v1/traces.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| e.to_string())?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with(tracing_subscriber::fmt::layer().json())
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer(service)))
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(provider)
}

/// The Prometheus recorder of axum's `prometheus-metrics` example.
fn setup_metrics_recorder() -> Result<PrometheusHandle, String> {
    const EXPONENTIAL_SECONDS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_requests_duration_seconds".to_string()),
            EXPONENTIAL_SECONDS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The request metrics of axum's `prometheus-metrics` example.
async fn track_metrics(req: Request, next: Next) -> impl IntoResponse {
    let start = Instant::now();
    let path = if let Some(matched_path) = req.extensions().get::<MatchedPath>() {
        matched_path.as_str().to_owned()
    } else {
        req.uri().path().to_owned()
    };
    let method = req.method().clone();

    let response = next.run(req).await;

    let latency = start.elapsed().as_secs_f64();
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_string()),
        ("path", path),
        ("status", status),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_requests_duration_seconds", &labels).record(latency);
    response
}

/// The request's span, as in axum's `request-id` example, joined to the caller's trace.
fn make_span(request: &Request) -> tracing::Span {
    let matched_path = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let span = match request.headers().get(REQUEST_ID_HEADER) {
        Some(request_id) => info_span!(
            "http_request",
            matched_path,
            method = ?request.method(),
            request_id = ?request_id,
        ),
        None => info_span!("http_request", matched_path, method = ?request.method()),
    };
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Only fails without the OpenTelemetry layer; the span is then simply a root.
    let _ = span.set_parent(parent);
    span
}

/// `routes` with `/health`, `/metrics` and the middleware around all of them.
fn app(routes: Router) -> Result<Router, String> {
    let handle = setup_metrics_recorder()?;
    let x_request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(
            x_request_id.clone(),
            MakeRequestUuid,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id));
    Ok(routes
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route_layer(middleware::from_fn(track_metrics))
        .layer(layers))
}

/// Serves `app` on `listen` until SIGTERM or Ctrl-C, then flushes the spans.
async fn serve(
    listen: SocketAddr,
    app: Router,
    provider: SdkTracerProvider,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // The SDK's shutdown blocks until the last batch is exported.
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Serves peer A on `listen` until stopped.
pub async fn serve_a(listen: SocketAddr) -> std::io::Result<()> {
    let provider = init_telemetry("peer-a").map_err(std::io::Error::other)?;
    let app = app(Router::new().route("/token", post(token))).map_err(std::io::Error::other)?;
    serve(listen, app, provider).await
}

/// Serves peer B on `listen`, calling A at `provider_url`, until stopped.
pub async fn serve_b(listen: SocketAddr, provider_url: String) -> std::io::Result<()> {
    let provider = init_telemetry("peer-b").map_err(std::io::Error::other)?;
    let retry_policy = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(5), Duration::from_millis(10))
        .build_with_max_retries(1);
    let client = reqwest::Client::builder()
        // Per attempt: reqwest-retry sends each attempt as a new request.
        .timeout(Duration::from_secs(1))
        // Loopback; whatever proxy the environment names (as in the baseline).
        .no_proxy()
        .build()
        .map_err(std::io::Error::other)?;
    let client = ClientBuilder::new(client)
        .with(TracingMiddleware::default())
        .with(RetryTransientMiddleware::new_with_policy(retry_policy))
        .build();
    let routes = Router::new()
        .route("/protected-action", post(protected_action))
        .with_state(Provider {
            client,
            token_url: format!("{provider_url}/token"),
        });
    let app = app(routes).map_err(std::io::Error::other)?;
    serve(listen, app, provider).await
}
