//! The OpenAPI 3.1 description each service serves at `GET /openapi.json`.
//!
//! A service describes its own routes with `#[utoipa::path]` on the handlers and
//! `#[derive(ToSchema)]` on its bodies; [`openapi_description`] adds, in one place, what every route of
//! both services shares because the layers in this crate do it: the `X-Request-ID` request
//! header, the `X-Request-ID` and `traceresponse` response headers, the errors of a JSON
//! body (400, 408, 413, 415, 422), and the 503 of load shedding and shutdown.
//!
//! Not in the description, because no operation can have them: 404 for a path no route
//! matches and 405 for a method a route does not serve, both `{"error": …}` with
//! `X-Request-ID`.

use serde_json::{Value, json};

use crate::observe::requests::id as request_id;

/// Media type of every JSON body.
pub const JSON: &str = "application/json";

/// Completes `doc` (a service's own paths and schemas) with what the shared layers add to
/// every route. Load shedding spares the probes (`/health`, `/metrics`, `/openapi.json`).
pub fn openapi_description(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    if let Some(description) = doc["info"]["description"].as_str() {
        doc["info"]["description"] = Value::from(format!("{description}\n\n{UNROUTED}"));
    }
    doc["components"]["schemas"]["ErrorBody"] = error_body_schema();
    let error = |description: &str| {
        json!({
            "description": description,
            "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        })
    };
    doc["components"]["responses"] = json!({
        "NotFound": error("404: no route matches the path."),
        "MethodNotAllowed": error("405: the route does not serve this method."),
    });
    doc["components"]["headers"] = json!({
        "X-Request-ID": {
            "description": "The request's id: the caller's own when it sent a valid one, else a new UUID v4. The same id is in every log line of the request, in both services.",
            "required": true,
            "schema": {"type": "string", "pattern": id_pattern()},
        },
        "traceresponse": {
            "description": "The W3C Trace Context Level 3 draft's `traceresponse`: the request's trace id and the server's span id (`00-<trace-id>-<span-id>-<flags>`, flags `sampled` 01 and `random` 02), to find its trace.",
            "schema": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]$"},
        },
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 1},
        },
    });
    doc["components"]["parameters"] = json!({
        "X-Request-ID": {
            "name": "X-Request-ID",
            "in": "header",
            "required": false,
            "description": "Your id for this request, kept and echoed when it is 1–128 characters of A-Za-z0-9._:- (a request with any other value, or two values, gets a new UUID v4 instead).",
            "schema": {"type": "string", "pattern": id_pattern()},
        },
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let shed = match path.as_str() {
            crate::edge::limits::NEVER_SHED => None,
            crate::edge::limits::SCRAPES => Some(SCRAPES_SHED),
            _ => Some(SHED),
        };
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut().filter_map(Value::as_object_mut) {
            let parameters = operation.entry("parameters").or_insert_with(|| json!([]));
            if let Some(parameters) = parameters.as_array_mut() {
                parameters.push(json!({"$ref": "#/components/parameters/X-Request-ID"}));
            }
            let has_body = operation.contains_key("requestBody");
            let responses = operation.entry("responses").or_insert_with(|| json!({}));
            if has_body {
                for (status, description) in BODY_ERRORS {
                    add_error(responses, status, description);
                }
                let too_large = format!(
                    "The body is larger than the limit ({} bytes).",
                    crate::edge::http::BODY_LIMIT
                );
                add_error(responses, "413", &too_large);
            }
            if let Some(shed) = shed {
                add_error(responses, "503", shed);
                responses["503"]["headers"]["Retry-After"] =
                    json!({"$ref": "#/components/headers/Retry-After"});
            }
            for response in responses
                .as_object_mut()
                .into_iter()
                .flat_map(|r| r.values_mut())
            {
                response["headers"]["X-Request-ID"] =
                    json!({"$ref": "#/components/headers/X-Request-ID"});
                response["headers"]["traceresponse"] =
                    json!({"$ref": "#/components/headers/traceresponse"});
            }
        }
    }
    doc
}

/// What the description says of the answers no operation can list.
const UNROUTED: &str = "Any path no route matches answers 404, and a method a route does not serve 405, both with an `ErrorBody` and `X-Request-ID` (`#/components/responses/NotFound`, `#/components/responses/MethodNotAllowed`).";

/// The errors any JSON body can get, before the handler sees it.
const BODY_ERRORS: [(&str, &str); 4] = [
    (
        "400",
        "Malformed JSON, or a field outside its documented range.",
    ),
    (
        "408",
        "The body did not arrive within the body timeout (`--body-timeout-ms`).",
    ),
    (
        "415",
        "The body is not sent as `Content-Type: application/json`.",
    ),
    ("422", "A field is missing or has the wrong type."),
];

/// What a 503 from the shared layers means.
const SHED: &str = "Too many requests in flight (`--max-in-flight`; `Retry-After` says when to try again), or the server is shutting down and cut the request off.";

/// The 503 `/metrics` can give, which has places of its own.
const SCRAPES_SHED: &str = "Too many scrapes at once (`--max-scrapes`; `Retry-After` says when to try again), or the server is shutting down and cut the request off.";

/// Adds `status` with an `ErrorBody` to `responses`, or extends the description of a
/// response the service already documents for that status.
fn add_error(responses: &mut Value, status: &str, description: &str) {
    match responses.get_mut(status) {
        Some(existing) => {
            let before = existing["description"].as_str().unwrap_or_default();
            existing["description"] = Value::from(format!("{before} Or: {description}"));
        }
        None => {
            responses[status] = json!({
                "description": description,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
            });
        }
    }
}

fn error_body_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error answer: what went wrong, and sometimes more for a human.",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "A short, stable description of what went wrong."},
            "details": {"type": "string", "description": "Extra context (B's 503 says what happened on each attempt)."},
        },
        "additionalProperties": false,
    })
}

fn id_pattern() -> String {
    format!("^[A-Za-z0-9._:-]{{1,{}}}$", request_id::MAX_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_pattern_is_the_validator_s() {
        assert_eq!(id_pattern(), "^[A-Za-z0-9._:-]{1,128}$");
    }
}
