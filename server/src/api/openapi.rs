//! The route table: the router and the OpenAPI description
//! ([`twinflow_schemas::api::openapi`]) are both built from it, so a route
//! cannot be served without being described.

use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use serde_json::Value;

pub use twinflow_schemas::api::openapi::{Method, Op, schema_fn};

use crate::app::App;

fn filter(method: Method) -> MethodFilter {
    match method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Delete => MethodFilter::DELETE,
    }
}

/// The route table: the router and its description are built from it.
pub struct Api {
    router: Router<Arc<App>>,
    routes: Vec<(&'static str, Op)>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes.iter().map(|(path, op)| (op.method(), path))).finish()
    }
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

impl Api {
    /// An empty table.
    pub fn new() -> Self {
        Self { router: Router::new(), routes: Vec::new() }
    }

    /// Serves `handler` at `path` for `op`'s method, and describes it.
    pub fn route<H, T>(mut self, path: &'static str, op: Op, handler: H) -> Self
    where
        H: Handler<T, Arc<App>>,
        T: 'static,
    {
        // Every method of the path, the 405 of the others included, passes the route's gate.
        let gate = axum::middleware::from_fn_with_state(op.required(), crate::auth::require);
        self.router = self.router.route(path, on(filter(op.method()), handler).layer(gate));
        self.routes.push((path, op));
        self
    }

    /// The router and the OpenAPI document.
    pub fn build(self) -> (Router<Arc<App>>, Value) {
        let document = twinflow_schemas::api::openapi::document(&self.routes);
        (self.router, document)
    }
}
