//! The fault endpoint (`--fault-listen`): `GET`, `PUT` and `DELETE /faults` on a loopback
//! listener of its own, answering only local tools.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{Fault, FaultSwitch, SEALED};
use crate::edge::http::{BodyError, Json, JsonBody};

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
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    if !addr.ip().is_loopback() {
        return Err(ListenError::NotLoopback(addr));
    }
    Ok(crate::edge::server::bind(addr).await?)
}

/// The fault endpoint's routes: `GET /faults` (what is on), `PUT /faults` (switch one on),
/// `DELETE /faults` (switch it off). Each answers `{"injected": <fault or null>}`; a sealed
/// fault as `{"scenario":"sealed","sealed":true}` only.
pub fn router<F: Fault>(switch: Arc<FaultSwitch<F>>) -> Router {
    Router::new()
        .route(
            "/faults",
            get(current::<F>)
                .put(switch_on::<F>)
                .delete(switch_off::<F>),
        )
        .with_state(switch)
}

#[derive(Debug, Serialize)]
struct Current {
    injected: Value,
}

/// What the endpoint shows of `fault`: all of it, or only that a sealed fault is on.
fn shown<F: Fault>(fault: Option<F>) -> Value {
    match fault {
        None => Value::Null,
        Some(fault) if fault.sealed() => json!({"scenario": SEALED, "sealed": true}),
        Some(fault) => serde_json::to_value(fault).unwrap_or(Value::Null),
    }
}

async fn current<F: Fault>(State(switch): State<Arc<FaultSwitch<F>>>) -> Json<Current> {
    Json(Current {
        injected: shown(switch.current()),
    })
}

async fn switch_on<F: Fault>(
    State(switch): State<Arc<FaultSwitch<F>>>,
    body: Result<JsonBody<F>, BodyError>,
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

async fn switch_off<F: Fault>(State(switch): State<Arc<FaultSwitch<F>>>) -> Json<Current> {
    let _ = switch.set(None);
    Json(Current {
        injected: Value::Null,
    })
}

/// Serves `router` (the service's `/faults` routes) on `listener` in the background, and
/// says where in the log. Only requests naming this endpoint by a loopback name and its
/// port in `Host`, and carrying no `Origin`, are served (see [`only_local`]).
pub(crate) fn serve(listener: TcpListener, router: axum::Router) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let router = router.layer(axum::middleware::from_fn_with_state(
        addr.port(),
        only_local,
    ));
    crate::event!(WARN, "fault_endpoint", addr = %addr,
        details = %format_args!("faults can be switched on at run time: PUT http://{addr}/faults"));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            crate::event!(ERROR, "fault_endpoint_failed", error = %error);
        }
    });
}

/// Refuses what a web page could send to the endpoint: a browser on this machine can reach
/// loopback, and through DNS rebinding a page of any site can, but it sends its own host
/// name in `Host`, and an `Origin` on any cross-site or scripted request. Allowed: exactly
/// one `Host`, of `localhost`, `127.0.0.1` or `[::1]` with this endpoint's port, a target in
/// origin form (`/faults`, not `http://elsewhere/faults`), and no `Origin`; anything else
/// gets 403.
async fn only_local(
    State(port): State<u16>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let host_is_local = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().is_ok_and(|host| is_local_host(host, port)),
        _ => false,
    };
    // An absolute-form target names its own host, which HTTP/1.1 says wins over `Host`.
    let origin_form = request.uri().authority().is_none() && request.uri().scheme().is_none();
    if !host_is_local || !origin_form || headers.contains_key(http::header::ORIGIN) {
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
    fn a_sealed_fault_shows_only_that_it_is_sealed() {
        let open = super::super::tests::Fake::new("a-slow", false);
        assert_eq!(
            shown(Some(open.clone())),
            serde_json::to_value(&open).expect("json")
        );
        let sealed = super::super::tests::Fake::new("a-slow", true);
        assert_eq!(
            shown(Some(sealed)),
            json!({"scenario": "sealed", "sealed": true})
        );
        assert_eq!(shown::<super::super::tests::Fake>(None), Value::Null);
    }
}
