//! What both services' fault endpoints share (`--fault-listen`, the labs' way to break a
//! service at run time): the loopback-only listener, the scenario names and the
//! `fault_injection_active{scenario}` gauge that shows which is on. Each service decides
//! what its faults do.
//!
//! A fault may be *sealed* (`"sealed": true`, what a mystery lab sends): it acts exactly as
//! the same fault unsealed, but everything a student reads while diagnosing (the gauge's
//! label, the `fault_injected` log line, `GET /faults`) says only that a sealed fault is on,
//! never its name or its settings.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::edge::http::{BodyError, Json, JsonBody};

/// The gauge of what is injected now: 1 for the active scenario, 0 for the others seen.
pub const ACTIVE: &str = "fault_injection_active";

/// At most this many scenario names over a process's life: each is a label value.
pub const MAX_SCENARIOS: usize = 16;

/// The scenario name shown for a sealed fault, whatever name it was given.
pub const SEALED: &str = "sealed";

/// The scenario name to show for a fault called `name`: [`SEALED`] when it is sealed.
pub fn shown_name(name: &str, sealed: bool) -> &str {
    if sealed { SEALED } else { name }
}

/// `--fault-listen` names an address other than loopback.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Refused: the endpoint breaks the service on request, so only this host may reach it.
    #[error("--fault-listen {0}: the fault endpoint listens on a loopback address only")]
    NotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::edge::server::BindError),
}

/// Binds the fault endpoint's listener: loopback addresses only.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    if !addr.ip().is_loopback() {
        return Err(ListenError::NotLoopback(addr));
    }
    Ok(crate::edge::server::bind(addr).await?)
}

/// What a service's faults look like to its endpoint: the fault it takes as JSON, what is
/// on now, and switching one on (`None`: off).
pub trait Switch: Send + Sync + 'static {
    /// A fault, as `PUT /faults` takes it.
    type Fault: Serialize + DeserializeOwned + Send + 'static;
    /// The fault switched on now.
    fn current(&self) -> Option<Self::Fault>;
    /// Switches `fault` on (`None`: off); an error says what is wrong with it.
    fn set(&self, fault: Option<Self::Fault>) -> Result<(), String>;
    /// Whether `fault` is sealed: `GET /faults` then shows only that a sealed fault is on.
    fn is_sealed(fault: &Self::Fault) -> bool;
}

/// The fault endpoint's routes: `GET /faults` (what is on), `PUT /faults` (switch one on),
/// `DELETE /faults` (switch it off). Each answers `{"injected": <fault or null>}`; a sealed
/// fault as `{"scenario":"sealed","sealed":true}` only.
pub fn router<S: Switch>(switch: Arc<S>) -> Router {
    Router::new()
        .route(
            "/faults",
            get(current::<S>)
                .put(switch_on::<S>)
                .delete(switch_off::<S>),
        )
        .with_state(switch)
}

#[derive(Debug, Serialize)]
struct Current {
    injected: Value,
}

/// What the endpoint shows of `fault`: all of it, or only that a sealed fault is on.
fn shown<S: Switch>(fault: Option<S::Fault>) -> Value {
    match fault {
        None => Value::Null,
        Some(fault) if S::is_sealed(&fault) => json!({"scenario": SEALED, "sealed": true}),
        Some(fault) => serde_json::to_value(fault).unwrap_or(Value::Null),
    }
}

async fn current<S: Switch>(State(switch): State<Arc<S>>) -> Json<Current> {
    Json(Current {
        injected: shown::<S>(switch.current()),
    })
}

async fn switch_on<S: Switch>(
    State(switch): State<Arc<S>>,
    body: Result<JsonBody<S::Fault>, BodyError>,
) -> Response {
    let fault = match body {
        Ok(JsonBody(fault)) => fault,
        Err(error) => return error.into_response(),
    };
    match switch.set(Some(fault)) {
        Ok(()) => current(State(switch)).await.into_response(),
        Err(message) => crate::edge::http::error(StatusCode::BAD_REQUEST, message),
    }
}

async fn switch_off<S: Switch>(State(switch): State<Arc<S>>) -> Json<Current> {
    let _ = switch.set(None);
    Json(Current {
        injected: Value::Null,
    })
}

/// Serves `router` (the service's `/faults` routes) on `listener` in the background, and
/// says where in the log. Only requests naming this endpoint by a loopback name and its
/// port in `Host`, and carrying no `Origin`, are served (see [`only_local`]).
pub fn serve(listener: TcpListener, router: axum::Router) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let router = router.layer(axum::middleware::from_fn_with_state(
        addr.port(),
        only_local,
    ));
    tracing::warn!(event = "fault_endpoint", addr = %addr,
        "faults can be switched on at run time: PUT http://{addr}/faults");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(event = "fault_endpoint_failed", error = %error);
        }
    });
}

/// Refuses what a web page could send to the endpoint: a browser on this machine can reach
/// loopback, and through DNS rebinding a page of any site can, but it sends its own host
/// name in `Host`, and an `Origin` on any cross-site or scripted request. Allowed: `Host` of
/// `localhost`, `127.0.0.1` or `[::1]` with this endpoint's port, and no `Origin`; anything
/// else gets 403.
async fn only_local(
    State(port): State<u16>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let host_is_local = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| is_local_host(host, port));
    if !host_is_local || headers.contains_key(http::header::ORIGIN) {
        return crate::edge::http::error(
            StatusCode::FORBIDDEN,
            "the fault endpoint answers only local tools: Host must be localhost, 127.0.0.1 or [::1] with its port, and no Origin",
        );
    }
    next.run(request).await
}

/// Whether `host` (a `Host` header) names this machine's loopback with `port`.
fn is_local_host(host: &str, port: u16) -> bool {
    let Some((name, given)) = host.rsplit_once(':') else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]") && given == port.to_string()
}

/// Checks a scenario name: 1–32 of `a-z0-9-` (it becomes a label value).
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err("scenario must be 1-32 characters of a-z, 0-9 and -".into())
    }
}

/// The scenario switched on now, and every name seen (bounded).
#[derive(Debug, Default)]
pub struct Scenarios {
    seen: RwLock<Vec<String>>,
    active: RwLock<Option<String>>,
}

impl Scenarios {
    /// Makes `name` the active scenario (`None`: none), after checking it: 1–32 of
    /// `a-z0-9-`, and at most [`MAX_SCENARIOS`] names ever. Sets the gauge. For a sealed
    /// fault, pass [`shown_name`]'s answer: the label must not name it.
    pub fn switch(&self, name: Option<&str>) -> Result<(), String> {
        if let Some(name) = name {
            check_name(name)?;
            let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
            if !seen.iter().any(|s| s == name) {
                if seen.len() >= MAX_SCENARIOS {
                    return Err(format!(
                        "at most {MAX_SCENARIOS} scenario names per process"
                    ));
                }
                seen.push(name.to_owned());
            }
        }
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = active.take() {
            metrics::gauge!(ACTIVE, "scenario" => before).set(0.0);
        }
        if let Some(name) = name {
            metrics::gauge!(ACTIVE, "scenario" => name.to_owned()).set(1.0);
            *active = Some(name.to_owned());
        }
        Ok(())
    }

    /// Describes the gauge (once, at start-up).
    pub fn describe() {
        metrics::describe_gauge!(
            ACTIVE,
            "1 for the fault scenario switched on now through the fault endpoint, 0 for others seen"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_with_the_port_are_local() {
        for (host, local) in [
            ("127.0.0.1:9180", true),
            ("localhost:9180", true),
            ("LOCALHOST:9180", true),
            ("[::1]:9180", true),
            ("127.0.0.1", false),
            ("127.0.0.1:80", false),
            ("evil.example.com:9180", false),
            ("evil.example.com", false),
            ("127.0.0.1.evil.example.com:9180", false),
            ("", false),
        ] {
            assert_eq!(is_local_host(host, 9180), local, "{host:?}");
        }
    }

    #[test]
    fn names_are_checked_and_bounded() {
        let scenarios = Scenarios::default();
        assert!(scenarios.switch(Some("Bad Name")).is_err());
        assert!(scenarios.switch(Some("")).is_err());
        for n in 0..MAX_SCENARIOS {
            scenarios
                .switch(Some(&format!("s{n}")))
                .expect("within the cap");
        }
        assert!(scenarios.switch(Some("one-too-many")).is_err());
        assert!(scenarios.switch(Some("s0")).is_ok(), "a name seen before");
        assert!(scenarios.switch(None).is_ok());
    }

    #[test]
    fn a_sealed_fault_shows_only_that_it_is_sealed() {
        #[derive(Debug)]
        struct Fake;
        impl Switch for Fake {
            type Fault = Value;
            fn current(&self) -> Option<Value> {
                None
            }
            fn set(&self, _: Option<Value>) -> Result<(), String> {
                Ok(())
            }
            fn is_sealed(fault: &Value) -> bool {
                fault["sealed"] == true
            }
        }
        let open = json!({"scenario": "a-slow", "extra_latency_ms": 300});
        assert_eq!(shown::<Fake>(Some(open.clone())), open);
        let sealed = json!({"scenario": "a-slow", "extra_latency_ms": 300, "sealed": true});
        assert_eq!(
            shown::<Fake>(Some(sealed)),
            json!({"scenario": "sealed", "sealed": true})
        );
        assert_eq!(shown::<Fake>(None), Value::Null);
        assert_eq!(shown_name("a-slow", true), SEALED);
        assert_eq!(shown_name("a-slow", false), "a-slow");
    }
}
