//! The OpenAPI 3.1 document, generated from the route registry and the request/response types
//! (JSON Schema from schemars). `docs/openapi.json` is a committed copy; a test fails when the
//! two drift (run with `OURO_BLESS=1` to rewrite the file).

use std::collections::BTreeMap;

use ouro_core::{ErrorCode, Permission};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::registry::RouteSpec;

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        _ => "Response",
    }
}

pub fn document(specs: &[RouteSpec]) -> Value {
    // OpenAPI 3.1 schemas are JSON Schema 2020-12; only the place of shared definitions differs.
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for spec in specs.iter().filter(|s| s.api) {
        let mut op = Map::new();
        let method = spec.method.as_str().to_lowercase();
        op.insert(
            "operationId".into(),
            json!(format!(
                "{method}{}",
                spec.path.replace(['/', '{', '}', '-', '.'], "_")
            )),
        );
        op.insert("summary".into(), json!(spec.summary));
        if !spec.tag.is_empty() {
            op.insert("tags".into(), json!([spec.tag]));
        }
        op.insert(
            "x-ouro-permission".into(),
            json!(spec.permission.describe()),
        );
        if spec.permission == Permission::Public {
            op.insert("security".into(), json!([]));
        }
        let mut params: Vec<Value> = path_params(spec.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        for (name, desc) in &spec.query {
            params.push(json!({"name": name, "in": "query", "required": false, "description": desc, "schema": {"type": "string"}}));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(req) = spec.request {
            let schema = req(&mut generator);
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema.to_value()}}}),
            );
        }
        let mut responses = Map::new();
        match spec.response {
            Some((status, resp)) => {
                let schema = resp(&mut generator);
                responses.insert(
                    status.to_string(),
                    json!({"description": status_text(status), "content": {"application/json": {"schema": schema.to_value()}}}),
                );
            }
            None => {
                let status = if spec.method == axum::http::Method::DELETE {
                    204
                } else {
                    200
                };
                responses.insert(
                    status.to_string(),
                    json!({"description": status_text(status)}),
                );
            }
        }
        responses.insert(
            "default".into(),
            json!({"description": "An error; see the code table", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
        op.insert("responses".into(), Value::Object(responses));
        paths
            .entry(spec.path)
            .or_default()
            .insert(method, Value::Object(op));
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": codes},
                    "message": {"type": "string"},
                    "details": {"type": "object"}
                }
            }}
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Ouro API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The whole DevOps loop in one binary. Authenticate with `Authorization: Bearer TOKEN`."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}
