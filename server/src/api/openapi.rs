//! The route table: the router and the OpenAPI description
//! ([`twinflow_schemas::api::openapi`]) are both built from it, so a route
//! cannot be served without being described.

use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use serde_json::Value;

pub use twinflow_schemas::api::openapi::{Method, Op, schema_fn};
use twinflow_schemas::auth::{Access, Scope};

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
    /// Serving a read replica: routes only the primary answers are refused.
    replica: bool,
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
        Self { router: Router::new(), routes: Vec::new(), replica: false }
    }

    /// The table of a read replica when `replica`: a route that needs the
    /// write or admin scope (or the cluster's), and the standing questions
    /// (kept by the primary), answer `409 read_replica` naming the primary.
    pub fn on_replica(mut self, replica: bool) -> Self {
        self.replica = replica;
        self
    }

    /// Serves `handler` at `path` for `op`'s method, and describes it.
    pub fn route<H, T>(mut self, path: &'static str, op: Op, handler: H) -> Self
    where
        H: Handler<T, Arc<App>>,
        T: 'static,
    {
        // Every method of the path, the 405 of the others included, passes the route's gate.
        let gate = axum::middleware::from_fn_with_state(op.required(), crate::auth::require);
        let primary_only = match op.required() {
            Access::Open => false,
            Access::Key(scope) => scope != Scope::Read || path.starts_with("/v1/subscriptions"),
            Access::Cluster => true,
        };
        self.router = if self.replica && primary_only {
            self.router.route(path, on(filter(op.method()), refused_on_replica).layer(gate))
        } else {
            self.router.route(path, on(filter(op.method()), handler).layer(gate))
        };
        self.routes.push((path, op));
        self
    }

    /// The router and the OpenAPI document.
    pub fn build(self) -> (Router<Arc<App>>, Value) {
        let document = twinflow_schemas::api::openapi::document(&self.routes);
        (self.router, document)
    }
}

/// What a read replica answers on a route only the primary serves.
async fn refused_on_replica(axum::extract::State(app): axum::extract::State<Arc<App>>) -> super::ApiError {
    match app.primary() {
        Err(replica) => replica.into(),
        Ok(_) => super::ApiError::internal("a primary's route was refused as a replica's"),
    }
}
