//! Service B's API description (OpenAPI 3.1), built from the handlers' and bodies'
//! annotations and served at `GET /openapi.json`; `deploy/openapi/service-b.json` is the
//! same document.

use serde_json::Value;
use utoipa::OpenApi as _;

/// The routes and bodies of service B.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Service B (consumer)",
        description = "Calls service A for a token with a strict timeout per attempt and a retry policy, and answers a combined body; A's 401 is passed through, and an unavailable A is a 503 that says what happened.",
        license(name = "MIT"),
    ),
    paths(
        crate::routes::protected_action,
        telemetry::edge::health,
        telemetry::edge::metrics_endpoint,
        telemetry::edge::openapi_endpoint,
    ),
    components(schemas(telemetry::edge::ErrorBody, telemetry::edge::MetricsFormat)),
    tags(
        (name = "consumer", description = "The action that needs a token from A."),
        (name = "probes", description = "Health, metrics and this description."),
    ),
)]
struct ApiDoc;

/// The description of this B: `delay_ms` up to its `--max-delay-ms`.
pub fn description(max_delay_ms: u64) -> Value {
    let mut doc = telemetry::edge::openapi_description(ApiDoc::openapi());
    doc["info"]["version"] = env!("CARGO_PKG_VERSION").into();
    doc["components"]["schemas"]["ActionRequest"]["properties"]["delay_ms"]["maximum"] =
        max_delay_ms.into();
    doc
}
