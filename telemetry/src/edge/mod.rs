//! The HTTP edge: every request arrives through here, and everything a client controls is
//! bounded. The entry point is [`serve`]; everything a service names is re-exported here.
//!
//! | file | what |
//! |---|---|
//! | [`server`] | accepts connections, serves HTTP/1.1 with the head, idle and connection limits, drains on shutdown |
//! | [`clocked_io`] | a connection's socket with its head and idle timers, and the answers written on it directly |
//! | [`config`] | the edge's flags, and the connection and in-flight limits they come to on this machine |
//! | [`connection`] | one connection: its timers, and what its end says about the client |
//! | [`deadline`] | the caller's deadline (`x-request-timeout-ms`), read and bounded |
//! | [`rejections`] | connections refused for what the client did: counted, and logged without flooding |
//! | [`limits`] | the protections around every route: shutdown cut-off, body read, in-flight limit |
//! | [`http`] | JSON bodies in and out, and a JSON error for every bad input |
//! | [`routes`] | `/health`, `/metrics`, `/openapi.json` |
//! | [`openapi`] | what the shared layers add to each service's API description |
//! | [`health`] | the `--healthcheck` probe for containers |
//! | [`cli`] | flag value parsers with messages that say what is allowed |
//! | [`secret`] | a password that never shows in logs or spans |

pub mod cli;
pub mod clocked_io;
pub mod config;
pub mod connection;
pub mod deadline;
pub mod health;
pub mod http;
pub mod limits;
pub mod openapi;
pub mod rejections;
pub mod routes;
pub mod secret;
pub mod server;

pub use cli::{non_negative, parse_listen, parse_share, parse_whole_in};
pub use config::{ConnectionLimits, EdgeArgs, LimitsError, ListenArgs};
pub use deadline::{CallerDeadline, MAX_CALLER_DEADLINE};
pub use health::{probe, probe_exit_code};
pub use http::{
    BODY_LIMIT, BodyError, ErrorBody, Json, JsonBody, error, innermost, json_whole_number,
    retry_after,
};
pub use openapi::openapi_description;
pub use routes::*;
pub use secret::Password;
pub use server::{BindError, Serving, bind, serve, signal};
