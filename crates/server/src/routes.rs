//! The REST routes, from the service's operation table.
//!
//! Every route an operation declares ([`hanzo_kms_service::operation::OPERATIONS`]) is bound
//! here to its handler, and so are the public routes that take no token. The router, the
//! OpenAPI document and the request-audit names all come from this one list; a route in the
//! table without a handler stops the server at start, and a test checks both directions.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post};
use hanzo_kms_core::{Error, Result};
use hanzo_kms_service::operation::{OPERATIONS, Operation, Route};

use crate::health::{healthz, metrics, readyz};
use crate::middleware::{Around, around, method_not_allowed, no_route};
use crate::openapi::openapi;
use crate::rest::{admin, data, keys, signing};
use crate::server::Shared;

/// Routes that belong to no operation: health, metrics and the API document. They take no
/// token and are not audited.
pub const PUBLIC_ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/healthz",
        summary: "Liveness",
    },
    Route {
        method: "GET",
        path: "/readyz",
        summary: "Readiness: store (it can commit) and provider",
    },
    Route {
        method: "GET",
        path: "/metrics",
        summary: "Prometheus metrics",
    },
    Route {
        method: "GET",
        path: "/v1/openapi.json",
        summary: "This API's OpenAPI document",
    },
];

/// Every REST route with the operation it reaches (`None`: a public route).
pub fn routes() -> impl Iterator<Item = (&'static Route, Option<&'static Operation>)> {
    OPERATIONS
        .iter()
        .flat_map(|o| o.rest.iter().map(move |r| (r, Some(*o))))
        .chain(PUBLIC_ROUTES.iter().map(|r| (r, None)))
}

/// The handler of a route.
fn handler(route: &Route) -> Option<MethodRouter<Shared>> {
    Some(match (route.method, route.path) {
        ("POST", "/v1/keys") => post(keys::create_key),
        ("GET", "/v1/keys") => get(keys::list_keys),
        ("GET", "/v1/keys/{name}") => get(keys::show_key),
        ("GET", "/v1/keys/{name}/public") => get(keys::public_key),
        ("POST", "/v1/keys/{name}/rotate") => post(keys::rotate_key),
        ("POST", "/v1/keyspaces") => post(keys::create_keyspace),
        ("POST", "/v1/keys/{name}/encrypt") => post(data::encrypt),
        ("POST", "/v1/keys/{name}/decrypt") => post(data::decrypt),
        ("POST", "/v1/keys/{name}/datakey") => post(data::datakey),
        ("POST", "/v1/keys/{name}/unwrap") => post(data::unwrap),
        ("POST", "/v1/models/{name}/datakey") => post(data::model_datakey),
        ("POST", "/v1/models/{name}/unwrap") => post(data::model_unwrap),
        ("POST", "/v1/keys/{name}/sign") => post(signing::sign_raw),
        ("POST", "/v1/keys/{name}/verify") => post(signing::verify_raw),
        ("POST", "/v1/poai/sign") => post(signing::poai_sign),
        ("POST", "/v1/poai/verify") => post(signing::poai_verify),
        ("POST", "/v1/poai/sign-batch") => post(signing::poai_sign_batch),
        ("POST", "/v1/poai/verify-item") => post(signing::poai_verify_item),
        ("POST", "/v1/hmm/sign") => post(signing::hmm_sign),
        ("POST", "/v1/hmm/verify") => post(signing::hmm_verify),
        ("GET", "/v1/audit") => get(admin::audit_list),
        ("GET", "/v1/audit/verify") => get(admin::audit_verify),
        ("POST", "/v1/tokens") => post(admin::create_token),
        ("GET", "/v1/tokens") => get(admin::list_tokens),
        ("DELETE", "/v1/tokens/{id}") => delete(admin::revoke_token),
        ("GET", "/healthz") => get(healthz),
        ("GET", "/readyz") => get(readyz),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/v1/openapi.json") => get(openapi),
        _ => return None,
    })
}

/// The router of every route, with the body limit and [`around`] every request.
pub(crate) fn router(state: Shared, max_body: usize, timeout: Duration) -> Result<Router> {
    let mut by_path: BTreeMap<&str, MethodRouter<Shared>> = BTreeMap::new();
    for (route, _) in routes() {
        let h = handler(route).ok_or_else(|| {
            Error::internal(format!(
                "the route {} {} has no handler",
                route.method, route.path
            ))
        })?;
        let merged = match by_path.remove(route.path) {
            Some(other) => other.merge(h),
            None => h,
        };
        by_path.insert(route.path, merged);
    }
    let mut app = Router::new();
    for (path, methods) in by_path {
        app = app.route(path, methods);
    }
    Ok(app
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            Around {
                state: state.clone(),
                timeout,
            },
            around,
        ))
        .with_state(state))
}

/// The audit name of a REST route (as axum matched it): its operation's, or
/// [`crate::UNKNOWN_OPERATION`].
pub(crate) fn operation_of(method: &str, route: &str) -> &'static str {
    Operation::of_route(method, route).map_or(crate::UNKNOWN_OPERATION, |o| o.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler_and_every_handler_a_route() {
        for (route, _) in routes() {
            assert!(
                handler(route).is_some(),
                "{} {} has no handler",
                route.method,
                route.path
            );
        }
        // A handler bound to no route in the table would be dead code: the `match` above lists
        // exactly the table's routes.
        let src = include_str!("routes.rs");
        let arms = src
            .lines()
            .filter(|l| l.trim_start().starts_with("(\"") && l.contains(") =>"))
            .count();
        assert_eq!(
            arms,
            routes().count(),
            "handler arms and table routes differ"
        );
    }

    #[test]
    fn api_routes_are_audited_under_their_operation() {
        assert_eq!(operation_of("POST", "/v1/poai/sign"), "poai.sign");
        assert_eq!(operation_of("GET", "/v1/nope"), crate::UNKNOWN_OPERATION);
        for (route, op) in routes() {
            match op {
                Some(o) => assert_eq!(operation_of(route.method, route.path), o.name),
                None => assert_eq!(
                    operation_of(route.method, route.path),
                    crate::UNKNOWN_OPERATION
                ),
            }
        }
    }

    #[test]
    fn every_rpc_in_the_proto_has_an_operation_and_every_operation_rpc_exists() {
        let proto = include_str!("../../../proto/hanzo/kms/v1/kms.proto");
        let rpcs: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        assert!(rpcs.len() > 20, "{rpcs:?}");
        for rpc in &rpcs {
            assert!(
                Operation::of_rpc(rpc).is_some(),
                "{rpc} has no operation in the table"
            );
        }
        for o in OPERATIONS {
            for rpc in o.rpc {
                assert!(rpcs.contains(rpc), "{rpc} is not in kms.proto");
            }
        }
    }
}
