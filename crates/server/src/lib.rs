//! The Hanzo KMS server: REST (axum) and gRPC (tonic) over the service's one pipeline
//! (DESIGN.md §5).
//!
//! The server adds only the wire: it authenticates bearer tokens into a [`RequestCtx`]
//! (pipeline step 1), reads requests with field-path errors, calls the service's operation, and
//! maps errors to HTTP status and gRPC code by [`ErrorKind`], in one `match` ([`wire_status`]),
//! never by message text. A 5xx body is generic; the details go to the log with the request id.
//!
//! ```text
//! error body = {"error": {"code": "<ErrorKind::code>", "message": "...", "request_id": "..."}}
//! ```
//!
//! | file | what |
//! |---|---|
//! | `server.rs` | settings, shared state, listeners, serving, the scheduler |
//! | `routes.rs` | the REST routes from the operation table, bound to handlers |
//! | `rest/` | the REST handlers by area |
//! | `grpc/` | the gRPC service (the same operations), the layer that audits tonic's own refusals, message conversions |
//! | `extract.rs` | authentication, path parameters, request bodies |
//! | `middleware.rs` | counting, timeouts and the audit of the REST layer's own refusals |
//! | `error.rs` | [`wire_status`] and the error body |
//! | `repeats.rs` | server errors in the log: one line per kind and interval, with a count |
//! | `health.rs`, `openapi.rs`, `schema.rs` | health, metrics, the API document |
//! | `http.rs`, `tls.rs` | connections, TLS |

#![forbid(unsafe_code)]

mod error;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
mod health;
mod http;
mod middleware;
mod openapi;
mod repeats;
mod rest;
mod routes;
mod schema;
mod server;
pub mod tls;

#[cfg(doc)]
use hanzo_kms_core::ErrorKind;
#[cfg(doc)]
use hanzo_kms_service::RequestCtx;

pub use error::{status_of, wire_status};
pub use openapi::openapi_document;
pub use routes::{PUBLIC_ROUTES, routes};
pub use server::{Options, Server};

/// What a request to an entry point that reaches no operation is audited as.
pub(crate) const UNKNOWN_OPERATION: &str = "request";
