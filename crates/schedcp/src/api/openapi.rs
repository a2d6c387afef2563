//! The OpenAPI 3.1 document, generated from the operation registry. OpenAPI
//! 3.1 schemas are JSON Schema 2020-12, which is what the registry holds, so
//! the only rewriting is moving each schema's `$defs` into
//! `components/schemas`.

use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::ops::Method;
use super::Services;

/// Move `$defs` out of `schema` into `defs`, pointing its `$ref`s there.
fn hoist(mut schema: Map<String, Value>, defs: &mut Map<String, Value>) -> Value {
    if let Some(Value::Object(d)) = schema.remove("$defs") {
        for (k, v) in d {
            let mut v = v;
            rewrite_refs(&mut v);
            defs.entry(k).or_insert(v);
        }
    }
    let mut v = Value::Object(schema);
    rewrite_refs(&mut v);
    v
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/components/schemas/{name}");
                }
            }
            o.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ApiError" } } }
    })
}

pub fn document(services: &Services) -> Value {
    let mut defs = Map::new();
    let mut paths = Map::new();
    for op in services.ops() {
        let input = hoist((*op.input_schema).clone(), &mut defs);
        let output = hoist((*op.output_schema).clone(), &mut defs);
        let mut operation = json!({
            "operationId": op.name,
            "summary": op.name.replace('_', " "),
            "description": format!("{} Requires scope `{}`.", op.description, op.scope),
            "responses": {
                "200": { "description": "success", "content": { "application/json": { "schema": output } } },
                "400": error_response("invalid input"),
                "401": error_response("missing, unknown, revoked or expired token"),
                "403": error_response("the token lacks the scope"),
                "404": error_response("not found"),
                "413": error_response("request too large"),
                "429": error_response("rate limited or too many jobs (see Retry-After)"),
                "503": error_response("something schedcp needs is not set up"),
            },
        });
        match op.method {
            Method::Get => {
                let required: Vec<&str> = input["required"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let params: Vec<Value> = input["properties"]
                    .as_object()
                    .map(|props| {
                        props
                            .iter()
                            .map(|(name, schema)| {
                                json!({
                                    "name": name,
                                    "in": "query",
                                    "required": required.contains(&name.as_str()),
                                    "description": schema.get("description").cloned().unwrap_or(Value::Null),
                                    "schema": schema,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                operation["parameters"] = Value::Array(params);
            }
            Method::Post => {
                operation["requestBody"] = json!({
                    "required": true,
                    "content": { "application/json": { "schema": input } }
                });
            }
        }
        let method = match op.method {
            Method::Get => "get",
            Method::Post => "post",
        };
        let entry = paths
            .entry(format!("/v1{}", op.path))
            .or_insert_with(|| json!({}));
        entry[method] = operation;
    }
    let err = schemars::schema_for!(ApiError);
    let mut err = err.to_value();
    if let Some(o) = err.as_object_mut() {
        o.remove("$schema");
        if let Some(Value::Object(d)) = o.remove("$defs") {
            for (k, v) in d {
                defs.entry(k).or_insert(v);
            }
        }
    }
    rewrite_refs(&mut err);
    defs.insert("ApiError".into(), err);
    let server = services
        .cfg
        .api
        .http
        .as_ref()
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|| "http://127.0.0.1".into());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "schedcp",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Observe this machine, find or write a sched_ext scheduler, verify it. Every call needs `Authorization: Bearer <token>` (`schedcp token create`). The same operations are MCP tools at /mcp.",
        },
        "servers": [{ "url": server }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": defs,
        },
    })
}
