//! The request schemas of the API document against the types the handlers read.

use axum::body::Bytes;
use hanzo_kms_service::RequestCtx;
use hanzo_kms_service::sign::{BatchItem, SignedAttestation};
use serde_json::{Value, json};

use super::admin::TokenReq;
use super::data::{DatakeyReq, DecryptReq, EncryptReq, ModelKeyReq, ModelUnwrapReq};
use super::keys::{CreateKey, KeyspaceReq, RotateReq};
use super::signing::{HmmSignReq, HmmVerifyReq, PoaiBatchReq, PoaiSignReq, SignReq, VerifyReq};
use crate::extract::{RequestBody, parse};
use crate::schema;

/// Parse `body` as the request type of the POST route `path`.
fn parses(path: &str, body: &str) -> std::result::Result<(), String> {
    // The type's route has the same schema as this one (decrypt and unwrap share one), and
    // the body is read as a handler reads it.
    fn p<T: RequestBody>(path: &str, body: &str) -> std::result::Result<(), String> {
        assert!(
            schema::request_body("POST", T::ROUTE).map(|s| s.0)
                == schema::request_body("POST", path).map(|s| s.0),
            "{path}: its type names another schema"
        );
        parse::<T>(&RequestCtx::local(), Ok(Bytes::from(body.to_owned())))
            .map(drop)
            .map_err(|e| e.error.to_string())
    }
    match path {
        "/v1/keys" => p::<CreateKey>(path, body),
        "/v1/keys/{name}/rotate" => p::<RotateReq>(path, body),
        "/v1/keys/{name}/encrypt" => p::<EncryptReq>(path, body),
        "/v1/keys/{name}/decrypt" | "/v1/keys/{name}/unwrap" => p::<DecryptReq>(path, body),
        "/v1/keys/{name}/datakey" => p::<DatakeyReq>(path, body),
        "/v1/keys/{name}/sign" => p::<SignReq>(path, body),
        "/v1/keys/{name}/verify" => p::<VerifyReq>(path, body),
        "/v1/keyspaces" => p::<KeyspaceReq>(path, body),
        "/v1/models/{name}/datakey" => p::<ModelKeyReq>(path, body),
        "/v1/models/{name}/unwrap" => p::<ModelUnwrapReq>(path, body),
        "/v1/poai/sign" => p::<PoaiSignReq>(path, body),
        "/v1/poai/verify" => p::<SignedAttestation>(path, body),
        "/v1/poai/sign-batch" => p::<PoaiBatchReq>(path, body),
        "/v1/poai/verify-item" => p::<BatchItem>(path, body),
        "/v1/hmm/sign" => p::<HmmSignReq>(path, body),
        "/v1/hmm/verify" => p::<HmmVerifyReq>(path, body),
        "/v1/tokens" => p::<TokenReq>(path, body),
        other => panic!("no request type for {other}"),
    }
}

/// Check `v` against `schema` (the subset of JSON Schema these use), and collect the JSON
/// pointer and the schema of every object in `v`. Every property of every object must be
/// in `v`, so that a test can try each name.
fn walk(
    schema: &Value,
    v: &Value,
    components: &Value,
    at: &str,
    objects: &mut Vec<(String, Value)>,
) {
    let s = schema::resolve(schema, components);
    match s["type"].as_str() {
        Some("object") => {
            let o = v
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object"));
            let props = s["properties"].as_object().expect("properties");
            assert_eq!(s["additionalProperties"], false, "{at}");
            for k in o.keys() {
                assert!(props.contains_key(k), "{at}/{k} is not in the schema");
            }
            // One of several alternatives is in the example; the others may be missing.
            let alternative = |k: &str| {
                s["oneOf"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["required"][0] == k)
            };
            for (k, p) in props {
                let Some(x) = o.get(k) else {
                    assert!(alternative(k), "{at}/{k} is missing from the example");
                    continue;
                };
                walk(p, x, components, &format!("{at}/{k}"), objects);
            }
            for r in s["required"].as_array().expect("required") {
                let r = r.as_str().unwrap_or_default();
                assert!(
                    props.contains_key(r),
                    "{at}: required {r} is not a property"
                );
            }
            objects.push((at.to_owned(), s.clone()));
        }
        Some("array") => {
            for (i, x) in v.as_array().expect("an array").iter().enumerate() {
                walk(&s["items"], x, components, &format!("{at}/{i}"), objects);
            }
        }
        Some("string") => {
            let text = v.as_str().unwrap_or_else(|| panic!("{at}: not a string"));
            if let Some(values) = s["enum"].as_array() {
                assert!(values.contains(v), "{at}: {text} is not one of {values:?}");
            }
        }
        Some("integer") => assert!(v.is_u64(), "{at}: not an integer"),
        Some("boolean") => assert!(v.is_boolean(), "{at}: not a boolean"),
        other => panic!("{at}: type {other:?}"),
    }
}

#[test]
fn the_request_schemas_match_the_request_types() {
    let components = schema::components();
    let mut routes = 0;
    for (route, _) in crate::routes::routes() {
        let (method, path) = (route.method, route.path);
        let Some((schema, example)) = schema::request_body(method, path) else {
            assert_ne!(method, "POST", "{path} has no request schema");
            continue;
        };
        routes += 1;
        parses(path, &example.to_string())
            .unwrap_or_else(|e| panic!("{path}: the example does not parse: {e}"));
        let mut objects = Vec::new();
        walk(&schema, &example, &components, "", &mut objects);
        assert!(!objects.is_empty(), "{path}");
        for (at, s) in objects {
            let required: Vec<&str> = s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let edited = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
                let mut body = example.clone();
                if let Some(o) = body.pointer_mut(&at).and_then(Value::as_object_mut) {
                    edit(o);
                }
                parses(path, &body.to_string())
            };
            for k in s["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|p| p.0)
            {
                let r = edited(&|o| {
                    o.remove(k);
                });
                assert_eq!(
                    r.is_ok(),
                    !required.contains(&k.as_str()),
                    "{path}: without {at}/{k}: {r:?}"
                );
            }
            let r = edited(&|o| {
                o.insert("unlisted".into(), json!(1));
            });
            assert!(r.is_err(), "{path}: {at}/unlisted was accepted");
            // The object as an array of its values (what serde would read by position).
            let mut body = example.clone();
            if let Some(o) = body.pointer_mut(&at) {
                let values: Vec<Value> = o
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|p| p.1.clone())
                    .collect();
                *o = Value::Array(values);
            }
            let r = parses(path, &body.to_string());
            assert!(
                r.as_ref()
                    .is_err_and(|e| e.contains("array") || e.contains("must be a JSON object")),
                "{path}: {at} as an array: {r:?}"
            );
        }
    }
    assert_eq!(
        routes,
        crate::routes::routes()
            .filter(|(r, _)| r.method == "POST")
            .count()
    );
}
