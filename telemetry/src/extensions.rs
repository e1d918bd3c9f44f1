//! What the server knows of a request that the layers above it report: the caller's
//! address. A leaf: it imports nothing of this crate. Data only; every protection is a
//! layer of its own (see [`crate::limits`]).

use std::sync::Arc;

/// The caller's IP as text, for the span's `client.address` (written once per connection).
#[derive(Debug, Clone)]
pub struct ClientAddress(pub Arc<str>);
