//! The OpenAPI 3.1 description of the REST API, built from the types the
//! routes read and write.
//!
//! Each route is described by an [`Op`] that names its method, summary,
//! parameters, body and answers by their Rust types; [`document`] turns the
//! route table into the OpenAPI document, with the JSON Schemas (draft
//! 2020-12, which OpenAPI 3.1 uses) of those very types. The server builds
//! its router from the same table (`server/src/api/openapi.rs`), so a route
//! cannot be served without being described.

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::ErrorBody;
use crate::auth::{Access, Scope};

/// An HTTP method of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    /// The method's key in an OpenAPI path item (`get`, `post`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Delete => "delete",
        }
    }
}

/// Builds a JSON Schema from a generator: monomorphised per type.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Value;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// The schema builder of `T`, for [`Op::bodies`] and [`Op::ok_many`].
pub fn schema_fn<T: JsonSchema>() -> SchemaFn {
    schema_of::<T>
}

/// A body or an answer: its media type and schema.
#[derive(Clone, Debug)]
enum Content {
    Json(SchemaFn),
    /// A media type with a string body (`text/plain`, `text/html`, …).
    Text(&'static str),
    /// Server-sent events, each `data:` line a JSON value of the schema (then `[DONE]`).
    Events(SchemaFn),
    /// Several media types, each with a schema.
    Many(Vec<(&'static str, Content)>),
}

/// One operation: what a route does and the types it reads and writes.
#[derive(Clone, Debug)]
pub struct Op {
    method: Method,
    summary: &'static str,
    description: &'static str,
    tag: &'static str,
    query: Option<SchemaFn>,
    integer_path_params: &'static [&'static str],
    body: Option<Content>,
    ok_status: u16,
    ok: Option<(&'static str, Content)>,
    access: Access,
}

impl Op {
    fn new(method: Method, tag: &'static str, summary: &'static str) -> Self {
        Self {
            method,
            summary,
            description: "",
            tag,
            query: None,
            integer_path_params: &[],
            body: None,
            ok_status: 200,
            ok: None,
            access: Access::ADMIN,
        }
    }

    /// A `GET` operation.
    pub fn get(tag: &'static str, summary: &'static str) -> Self {
        Self::new(Method::Get, tag, summary)
    }

    /// A `POST` operation.
    pub fn post(tag: &'static str, summary: &'static str) -> Self {
        Self::new(Method::Post, tag, summary)
    }

    /// A `DELETE` operation.
    pub fn delete(tag: &'static str, summary: &'static str) -> Self {
        Self::new(Method::Delete, tag, summary)
    }

    /// Who may call it; without this, only an `admin` key.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// A longer description (Markdown).
    pub fn describe(mut self, text: &'static str) -> Self {
        self.description = text;
        self
    }

    /// Query parameters: the fields of `T`.
    pub fn query<T: JsonSchema>(mut self) -> Self {
        self.query = Some(schema_of::<T>);
        self
    }

    /// Path parameters that are integers (the others are strings).
    pub fn integer_path(mut self, names: &'static [&'static str]) -> Self {
        self.integer_path_params = names;
        self
    }

    /// A JSON request body of type `T`.
    pub fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(Content::Json(schema_of::<T>));
        self
    }

    /// A request body in one of several media types, each a JSON value of its type.
    pub fn bodies(mut self, types: Vec<(&'static str, SchemaFn)>) -> Self {
        self.body = Some(Content::Many(types.into_iter().map(|(media, f)| (media, Content::Json(f))).collect()));
        self
    }

    /// The success answer: JSON of type `T`.
    pub fn ok<T: JsonSchema>(mut self, description: &'static str) -> Self {
        self.ok = Some((description, Content::Json(schema_of::<T>)));
        self
    }

    /// The success answer: a text body of `media` type.
    pub fn ok_text(mut self, media: &'static str, description: &'static str) -> Self {
        self.ok = Some((description, Content::Text(media)));
        self
    }

    /// The success answer in one of several media types (by `Accept`, format or `stream`).
    pub fn ok_many(mut self, description: &'static str, types: Vec<(&'static str, Option<SchemaFn>)>) -> Self {
        let many = types.into_iter().map(|(media, f)| (media, f.map_or(Content::Text(media), Content::Json))).collect();
        self.ok = Some((description, Content::Many(many)));
        self
    }

    /// The success answer: JSON of type `T`, or with `stream: true`
    /// server-sent events whose `data:` lines are each a JSON `E` (then
    /// `[DONE]`). OpenAPI 3.1 has no schema for the events of a stream: the
    /// body is described as a string and `E` as its `x-event-schema`.
    pub fn ok_or_events<T: JsonSchema, E: JsonSchema>(mut self, description: &'static str) -> Self {
        let types = vec![
            ("application/json", Content::Json(schema_of::<T>)),
            ("text/event-stream", Content::Events(schema_of::<E>)),
        ];
        self.ok = Some((description, Content::Many(types)));
        self
    }

    /// The success answer: a stream of server-sent events, each `data:` a JSON `E`.
    pub fn ok_events<E: JsonSchema>(mut self, description: &'static str) -> Self {
        self.ok = Some((description, Content::Events(schema_of::<E>)));
        self
    }

    /// The success status when it is not 200 (202 for a started job).
    pub fn status(mut self, status: u16) -> Self {
        self.ok_status = status;
        self
    }

    /// The route's method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Who may call the route.
    pub fn required(&self) -> Access {
        self.access
    }
}

/// The `content` of a body or an answer (media type → media type object),
/// its schemas from `generator` (which collects the document's components).
fn content_json(content: &Content, generator: &mut SchemaGenerator) -> Value {
    let media = match content {
        Content::Json(_) => "application/json",
        Content::Text(media) => media,
        Content::Events(_) => "text/event-stream",
        Content::Many(types) => {
            let map = types.iter().map(|(media, c)| ((*media).to_owned(), media_json(c, generator))).collect();
            return Value::Object(map);
        }
    };
    json!({ media: media_json(content, generator) })
}

/// The media type object of one content.
fn media_json(content: &Content, generator: &mut SchemaGenerator) -> Value {
    match content {
        Content::Json(f) => json!({ "schema": f(generator) }),
        Content::Events(f) => json!({
            "schema": {
                "type": "string",
                "description": "Server-sent events: each `data:` line is one JSON value of `x-event-schema` \
                                (a chat completion's stream ends with `[DONE]`)",
            },
            "x-event-schema": f(generator),
        }),
        // Several media types do not nest.
        Content::Text(_) | Content::Many(_) => json!({ "schema": { "type": "string" } }),
    }
}

/// The OpenAPI 3.1 document of `routes` (path, operation).
pub fn document(routes: &[(&'static str, Op)]) -> Value {
    // Answers are described as the server writes them, bodies and parameters as it reads them;
    // request schemas are inlined so the two contracts never share a component.
    let mut answers = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
            s.contract = Contract::Serialize;
        })
        .into_generator();
    let mut requests = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
            s.contract = Contract::Deserialize;
        })
        .into_generator();
    let error = schema_of::<ErrorBody>(&mut answers);
    let mut paths = Map::new();
    for (path, op) in routes {
        let mut operation = Map::new();
        operation.insert("summary".into(), json!(op.summary));
        if !op.description.is_empty() {
            operation.insert("description".into(), json!(op.description));
        }
        operation.insert("tags".into(), json!([op.tag]));
        operation.insert(
            "operationId".into(),
            json!(format!("{}{}", op.method.key(), path.replace(['/', '{', '}', '.'], "_").trim_end_matches('_'))),
        );
        let mut parameters = path_parameters(path, op.integer_path_params);
        if let Some(query) = op.query {
            parameters.extend(query_parameters(query(&mut requests)));
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = &op.body {
            operation.insert(
                "requestBody".into(),
                json!({ "required": true, "content": content_json(body, &mut requests) }),
            );
        }
        let mut responses = Map::new();
        let ok = match &op.ok {
            Some((description, ok)) => json!({ "description": description, "content": content_json(ok, &mut answers) }),
            None => json!({ "description": "OK (no body)" }),
        };
        responses.insert(op.ok_status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({
                "description": "An error: `code` is stable (clients match on it), `message` is for people",
                "content": { "application/json": { "schema": error } },
            }),
        );
        operation.insert("responses".into(), Value::Object(responses));
        match op.access {
            Access::Open => {
                operation.insert("security".into(), json!([]));
            }
            Access::Key(scope) => {
                operation.insert("security".into(), json!([{ "key": [] }, { "session": [] }]));
                operation.insert("x-scope".into(), json!(scope));
            }
            Access::Cluster => {
                operation.insert("security".into(), json!([{ "cluster": [] }]));
            }
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[op.method.key()] = Value::Object(operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "twinflow",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Live feature tables, hybrid search and RAG over an author's documents. \
                            Errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code`.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "security": [{ "key": [] }, { "session": [] }],
        "components": {
            "schemas": answers.take_definitions(true),
            "securitySchemes": {
                "key": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": format!(
                        "An API key (`Authorization: Bearer tfk_…`). Each operation's `x-scope` names the scope \
                         it needs: `{}`, `{}` or `{}` (which implies the others).",
                        Scope::Read, Scope::Write, Scope::Admin
                    ),
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": crate::auth::SESSION_COOKIE,
                    "description": "A dashboard session, made from a key by `POST /v1/session`",
                },
                "cluster": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The secret the processes of one cluster share",
                },
            },
        },
    })
}

/// `{name}` segments of `path` as required path parameters.
fn path_parameters(path: &str, integers: &[&str]) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let kind = if integers.contains(&name) { "integer" } else { "string" };
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": kind } })
        })
        .collect()
}

/// The properties of an (inlined) object schema as query parameters.
fn query_parameters(schema: Value) -> Vec<Value> {
    let required: Vec<&str> =
        schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else { return Vec::new() };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property.as_object_mut().and_then(|p| p.remove("description"));
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": property,
            });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Params {
        /// The question.
        q: String,
        #[serde(default)]
        k: Option<u32>,
    }

    #[test]
    fn query_fields_become_parameters_and_path_segments_path_parameters() {
        let mut generator = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true).into_generator();
        let parameters = query_parameters(schema_of::<Params>(&mut generator));
        assert_eq!(parameters.len(), 2);
        let named = |name: &str| parameters.iter().find(|p| p["name"] == name).expect(name);
        assert_eq!(named("q")["in"], "query");
        assert_eq!(named("q")["required"], true);
        assert_eq!(named("q")["description"], "The question.");
        assert_eq!(named("k")["required"], false);
        let path = path_parameters("/v1/datasets/{name}/versions/{version}", &["version"]);
        assert_eq!(path[0]["schema"]["type"], "string");
        assert_eq!(path[1]["name"], "version");
        assert_eq!(path[1]["schema"]["type"], "integer");
    }
}
