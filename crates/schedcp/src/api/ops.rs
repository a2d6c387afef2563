//! The operation registry: every tool/endpoint defined once, with its scope,
//! its typed input and output (JSON Schema generated from the types), and
//! its handler. MCP lists and calls these; REST routes and the OpenAPI
//! document are generated from the same list.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::auth::{Scope, TokenInfo};
use super::error::ApiError;
use super::Services;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// What a handler gets besides its input.
pub struct Ctx<'a> {
    pub services: &'a Services,
    pub caller: &'a TokenInfo,
}

impl Ctx<'_> {
    /// Who the caller writes as: an admin token is the operator; any other
    /// token owns what it creates and has quotas.
    pub fn author(&self) -> crate::policies::Author<'_> {
        if self.caller.allows(crate::api::auth::Scope::Admin) {
            crate::policies::Author::Operator
        } else {
            crate::policies::Author::Token(&self.caller.id)
        }
    }
}

type Handler = Box<dyn Fn(&Ctx<'_>, Value) -> Result<Value, ApiError> + Send + Sync>;
type QueryParser = fn(&str) -> Result<Value, String>;
type InputChecker = fn(Value) -> Result<(), String>;

pub struct Op {
    /// MCP tool name.
    pub name: &'static str,
    pub scope: Scope,
    pub method: Method,
    /// REST path under `/v1`.
    pub path: &'static str,
    pub description: &'static str,
    /// Changes nothing (MCP `readOnlyHint`).
    pub read_only: bool,
    /// Returns a job; accepts `wait_seconds` to wait with progress.
    pub job: bool,
    pub input_schema: Arc<Map<String, Value>>,
    pub output_schema: Arc<Map<String, Value>>,
    pub run: Handler,
    /// Input from a URL query string (GET).
    pub from_query: QueryParser,
    /// Whether JSON arguments are a valid input (what `run` does first).
    pub check_input: InputChecker,
}

fn schema_of<T: JsonSchema>(serialize: bool) -> Map<String, Value> {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.contract = if serialize {
            schemars::generate::Contract::Serialize
        } else {
            schemars::generate::Contract::Deserialize
        };
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut v = schema.to_value();
    let obj = v.as_object_mut().expect("a schema object");
    // Some MCP clients choke on the draft URI; the dialect is implied.
    obj.remove("$schema");
    obj.clone()
}

fn input_checker<I: DeserializeOwned>(v: Value) -> Result<(), String> {
    serde_json::from_value::<I>(v)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn query_parser<I: DeserializeOwned + Serialize>(q: &str) -> Result<Value, String> {
    let i: I = serde_urlencoded::from_str(q).map_err(|e| e.to_string())?;
    serde_json::to_value(i).map_err(|e| e.to_string())
}

/// Define an operation from a typed handler.
#[allow(clippy::too_many_arguments)]
pub fn op<I, O>(
    name: &'static str,
    scope: Scope,
    method: Method,
    path: &'static str,
    read_only: bool,
    description: &'static str,
    f: fn(&Ctx<'_>, I) -> Result<O, ApiError>,
) -> Op
where
    I: DeserializeOwned + Serialize + JsonSchema + 'static,
    O: Serialize + JsonSchema + 'static,
{
    Op {
        name,
        scope,
        method,
        path,
        description,
        read_only,
        job: false,
        input_schema: Arc::new(schema_of::<I>(false)),
        output_schema: Arc::new(schema_of::<O>(true)),
        run: Box::new(move |ctx, args| {
            let input: I = serde_json::from_value(args)
                .map_err(|e| ApiError::invalid(format!("invalid arguments for {name}: {e}")))?;
            let out = f(ctx, input)?;
            serde_json::to_value(out).map_err(|e| ApiError::internal(e.into()))
        }),
        from_query: query_parser::<I>,
        check_input: input_checker::<I>,
    }
}

impl Op {
    pub fn as_job(mut self) -> Op {
        self.job = true;
        self
    }
}
