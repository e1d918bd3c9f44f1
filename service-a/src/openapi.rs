//! Service A's API description (OpenAPI 3.1), built from the handlers' and bodies'
//! annotations and served at `GET /openapi.json`; `deploy/openapi/service-a.json` is the
//! same with the default flags.

use serde_json::Value;
use utoipa::OpenApi as _;

/// The routes and bodies of service A.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Service A (provider)",
        description = "Issues a deterministic token for valid credentials, and can be asked to answer slowly (`delay_ms`) so that its callers' timeouts can be watched at work.",
        license(name = "MIT"),
    ),
    paths(
        crate::routes::issue_token,
        telemetry::edge::health,
        telemetry::edge::metrics_endpoint,
        telemetry::edge::openapi_endpoint,
    ),
    components(schemas(telemetry::edge::ErrorBody, telemetry::edge::MetricsFormat)),
    tags(
        (name = "provider", description = "Tokens."),
        (name = "probes", description = "Health, metrics and this description."),
    ),
)]
struct ApiDoc;

/// The description of this A, as its flags make it: `delay_ms` up to its `--max-delay-ms`,
/// and `fail_status` only with `--allow-fail-status` (otherwise it must be absent or null).
pub fn description(max_delay_ms: u64, allow_fail_status: bool) -> Value {
    let mut doc = telemetry::edge::openapi_description(ApiDoc::openapi());
    doc["info"]["version"] = env!("CARGO_PKG_VERSION").into();
    let body = &mut doc["components"]["schemas"]["TokenRequest"]["properties"];
    body["delay_ms"]["maximum"] = max_delay_ms.into();
    if !allow_fail_status {
        body["fail_status"] = serde_json::json!({
            "type": "null",
            "description": "Off in this A: it answers any value but null with 400. Started with `--allow-fail-status`, A answers this 5xx (500-599) instead of a token, to play a failing provider.",
        });
    }
    doc
}
