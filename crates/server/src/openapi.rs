//! The OpenAPI document, built from the service's operation table and the public routes.

use serde_json::{Value, json};

pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (route, _) in crate::routes::routes() {
        let (method, path, summary) = (&route.method, &route.path, route.summary);
        let public = matches!(
            *path,
            "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json"
        );
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": {"description": "OK"},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "408": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
                "413": {"$ref": "#/components/responses/Error"},
                "429": {"$ref": "#/components/responses/Error"},
                "503": {"$ref": "#/components/responses/Error"}
            }
        });
        if public {
            op["security"] = json!([]);
        }
        let answer = match crate::schema::answer(method, path) {
            Some(schema) => json!({"description": "OK",
                "content": {"application/json": {"schema": schema}}}),
            None if matches!(*path, "/healthz" | "/metrics") => json!({"description": "OK",
                "content": {"text/plain": {"schema": {"type": "string"}}}}),
            None => json!({"description": "OK"}),
        };
        op["responses"]["200"] = answer.clone();
        if *path == "/readyz" {
            // Not ready: the same object, not an error.
            op["responses"]["503"] = answer;
        }
        if let Some((schema, example)) = crate::schema::request_body(method, path) {
            // Every body is one JSON object (an array is refused); rotation's may be empty.
            op["requestBody"] = json!({
                "required": !path.ends_with("/rotate"),
                "content": {"application/json": {"schema": schema, "example": example}}
            });
        }
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(query_parameters(method, path));
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|o| o.insert(method.to_ascii_lowercase(), op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Hanzo KMS", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": crate::schema::components(),
            "responses": {"Error": {"description": "An error", "content": {"application/json": {"schema": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "object", "required": ["code", "message", "request_id"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"}}}}
            }}}}}
        }
    })
}

pub(crate) async fn openapi() -> axum::Json<Value> {
    axum::Json(openapi_document())
}

/// The query parameters of a route.
fn query_parameters(method: &str, path: &str) -> Vec<Value> {
    let q = |name: &str, schema: Value, description: &str| {
        json!({"name": name, "in": "query", "required": false, "schema": schema,
            "description": description})
    };
    match (method, path) {
        ("GET", "/v1/keys") => vec![q(
            "prefix",
            json!({"type": "string"}),
            "only keys whose names start with this",
        )],
        ("GET", "/v1/audit") => vec![
            q(
                "after",
                json!({"type": "integer", "minimum": 0}),
                "records after this sequence number (default 0: from the first)",
            ),
            q(
                "limit",
                json!({"type": "integer", "minimum": 0, "maximum": 4294967295_u64}),
                "at most this many records (default 100; more than 1000 is read as 1000)",
            ),
        ],
        _ => Vec::new(),
    }
}
