//! The server's per-request series, registered once per route and outcome and kept by
//! the instrumented router ([`RequestMetrics`]): `http_requests_total{method,route,status}`,
//! `http_server_request_duration_seconds` by the OpenTelemetry attributes (with exemplar
//! slots), and `http_server_active_requests` by method. Every label value comes from a
//! bounded set: method labels are the standard methods or `_OTHER`, routes are the
//! router's own or `unmatched`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use http::Method;

use crate::observe::metrics::exemplars::Exemplars;

/// Route label for requests that matched no route (their raw paths would explode the label
/// set; the log line still shows the path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Method label for any method outside the standard ones (OpenTelemetry's convention).
pub const OTHER_METHOD: &str = "_OTHER";

/// The methods of RFC 9110 and PATCH: the method label values besides `_OTHER`, unless
/// `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` names others (a full override, as the HTTP
/// semantic conventions ask).
pub const DEFAULT_KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// The HTTP methods a service names in its labels and span names; every other method is
/// `_OTHER`. Held by the request layer and the outbound middleware.
#[derive(Debug, Clone)]
pub struct KnownMethods(Arc<[&'static str]>);

impl Default for KnownMethods {
    /// [`DEFAULT_KNOWN_METHODS`].
    fn default() -> Self {
        Self(DEFAULT_KNOWN_METHODS.into())
    }
}

impl KnownMethods {
    /// `methods` (`OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`), in place of the defaults.
    /// Leaked, once per service started: each becomes a label value for the process's life.
    pub fn named(methods: &[String]) -> Self {
        Self(
            methods
                .iter()
                .map(|m| &*Box::leak(m.clone().into_boxed_str()))
                .collect(),
        )
    }

    /// The method's label value: its name if known, `_OTHER` otherwise.
    pub fn label(&self, method: &Method) -> &'static str {
        self.0
            .iter()
            .find(|known| **known == method.as_str())
            .copied()
            .unwrap_or(OTHER_METHOD)
    }

    /// The position of a method label: in the known methods, `_OTHER` last.
    fn index(&self, method: &'static str) -> usize {
        self.0
            .iter()
            .position(|known| *known == method)
            .unwrap_or(self.0.len())
    }

    /// How many labels there are: the known methods and `_OTHER`.
    fn labels(&self) -> usize {
        self.0.len() + 1
    }
}

/// `error.type` of a server span whose caller went away before the answer.
pub const CALLER_GONE: &str = "client_disconnected";

/// The server's request series, for one instrumented router: each handle looked up in the
/// recorder once and kept here, so a request builds no label set and looks nothing up.
#[derive(Debug)]
pub struct RequestMetrics {
    known: KnownMethods,
    exemplars: Exemplars,
    /// `http_server_active_requests` per method label (the known methods, then `_OTHER`),
    /// made on first use; read without a lock, since every request changes it.
    active: Vec<OnceLock<metrics::Gauge>>,
    /// Per route.
    routes: RwLock<HashMap<Box<str>, RouteHandles>>,
    /// For requests no route matched.
    unmatched: OnceLock<RouteHandles>,
}

impl RequestMetrics {
    /// The series of a router whose routes serve `methods`: their gauges exist, at zero,
    /// from the first scrape.
    /// `known` names the method labels, and the duration histograms keep their exemplars
    /// in `exemplars`.
    pub fn new(known: KnownMethods, exemplars: Exemplars, methods: &[Method]) -> Self {
        let metrics = Self {
            active: (0..known.labels()).map(|_| OnceLock::new()).collect(),
            known,
            exemplars,
            routes: RwLock::default(),
            unmatched: OnceLock::new(),
        };
        for method in methods {
            metrics.active(metrics.known.label(method)).set(0.0);
        }
        metrics
    }

    /// The label of `method`: its name if known, `_OTHER` otherwise.
    pub fn method_label(&self, method: &Method) -> &'static str {
        self.known.label(method)
    }

    /// `http_server_active_requests` for one method label.
    pub fn active(&self, method: &'static str) -> &metrics::Gauge {
        self.active[self.known.index(method)].get_or_init(|| {
            metrics::gauge!(
                crate::observe::metrics::SERVER_ACTIVE,
                "http_request_method" => method,
                "url_scheme" => "http",
            )
        })
    }

    /// The handles of `route` (`None`: no route matched).
    pub fn route(&self, route: Option<&str>) -> RouteHandles {
        let new = |route: Option<&str>| {
            RouteHandles(Arc::new(Route {
                route: route.map(Box::from),
                names: (0..self.known.labels()).map(|_| OnceLock::new()).collect(),
                known: self.known.clone(),
                exemplars: self.exemplars.clone(),
                outcomes: RwLock::default(),
            }))
        };
        let Some(route) = route else {
            return self.unmatched.get_or_init(|| new(None)).clone();
        };
        if let Some(handles) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
        {
            return handles.clone();
        }
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route.into())
            .or_insert_with(|| new(Some(route)))
            .clone()
    }
}

/// Method, protocol version, status, and whether the status was sent (false: the caller
/// went away).
type OutcomeKey = (&'static str, &'static str, u16, bool);

/// What one request's outcome records into.
#[derive(Debug)]
pub struct OutcomeHandles {
    /// `http_requests_total{method,route,status}`.
    pub requests: metrics::Counter,
    /// `http_server_request_duration_seconds{…}`, with exemplars.
    pub duration: crate::observe::metrics::exemplars::ExemplarHistogram,
}

/// The metric handles of one route, registered once and reused.
#[derive(Clone)]
pub struct RouteHandles(Arc<Route>);

impl std::fmt::Debug for RouteHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RouteHandles").field(&self.0.route).finish()
    }
}

struct Route {
    /// The matched route; `None` when no route matched.
    route: Option<Box<str>>,
    /// `{method} {route}` for each method label (the known methods, then `_OTHER`), made on
    /// first use: every request's span name, and its log line's endpoint.
    names: Vec<OnceLock<Box<str>>>,
    known: KnownMethods,
    exemplars: Exemplars,
    outcomes: RwLock<HashMap<OutcomeKey, OutcomeHandles>>,
}

impl RouteHandles {
    /// The span name of a request with method label `method` on this route: `POST /token`,
    /// `HTTP /token` for a nonstandard method, the method alone when no route matched.
    pub fn name(&self, method: &'static str) -> &str {
        let index = self.0.known.index(method);
        let prefix = if method == OTHER_METHOD {
            "HTTP"
        } else {
            method
        };
        self.0.names[index].get_or_init(|| match &self.0.route {
            Some(route) => format!("{prefix} {route}").into(),
            None => prefix.into(),
        })
    }

    /// Runs `record` with the handles for one method, protocol version (`1.1`) and status
    /// (`answered` false: the caller went away), lent rather than cloned, so requests share
    /// no reference count that would move between cores on each.
    pub fn with_outcome(
        &self,
        method: &'static str,
        version: &'static str,
        status: u16,
        answered: bool,
        record: impl FnOnce(&OutcomeHandles),
    ) {
        let key = (method, version, status, answered);
        if let Some(handles) = self
            .0
            .outcomes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return record(handles);
        }
        let route = self.0.route.as_deref();
        let counter_labels = [
            ("method", method.to_owned()),
            ("route", route.unwrap_or(UNMATCHED_ROUTE).to_owned()),
            ("status", status.to_string()),
        ];
        // The OpenTelemetry attributes of http.server.request.duration, as Prometheus
        // labels: http.route only when a route matched, the status only when one was sent,
        // error.type on failures.
        let mut duration_labels = vec![("http_request_method", method.to_owned())];
        if let Some(route) = route {
            duration_labels.push(("http_route", route.to_owned()));
        }
        if answered {
            duration_labels.push(("http_response_status_code", status.to_string()));
        }
        duration_labels.push(("url_scheme", "http".to_owned()));
        duration_labels.push(("network_protocol_version", version.to_owned()));
        if !answered {
            duration_labels.push(("error_type", CALLER_GONE.to_owned()));
        } else if status >= 500 {
            duration_labels.push(("error_type", status.to_string()));
        }
        let handles = OutcomeHandles {
            requests: metrics::counter!(crate::observe::metrics::SERVER_REQUESTS, &counter_labels),
            duration: crate::observe::metrics::exemplars::ExemplarHistogram::register(
                &self.0.exemplars,
                crate::observe::metrics::SERVER_DURATION,
                &duration_labels,
            ),
        };
        record(
            self.0
                .outcomes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_insert(handles),
        );
    }
}
