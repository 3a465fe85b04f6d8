//! The route registry: the one way to add a route. Each entry declares its method, path,
//! permission and documentation; the registry wraps the handler in the permission guard, and the
//! same list produces the OpenAPI document and drives the test that proves every route refuses
//! callers it should refuse. Phase modules add their routes through [`Registry::route`].

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use ouro_core::Permission;
use schemars::Schema;
use schemars::{JsonSchema, SchemaGenerator};

use crate::AppState;

pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// What the registry knows about one route.
#[derive(Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
    pub summary: &'static str,
    pub tag: &'static str,
    pub request: Option<SchemaFn>,
    pub response: Option<(u16, SchemaFn)>,
    /// Query parameters: (name, description).
    pub query: Vec<(&'static str, &'static str)>,
    /// Part of the JSON API (documented in OpenAPI) rather than the web UI.
    pub api: bool,
}

pub struct Registry {
    state: AppState,
    router: Router<AppState>,
    specs: Vec<RouteSpec>,
}

/// Adds documentation to the route just registered.
pub struct RouteDoc<'a>(&'a mut RouteSpec);

impl RouteDoc<'_> {
    pub fn doc(self, tag: &'static str, summary: &'static str) -> Self {
        self.0.tag = tag;
        self.0.summary = summary;
        self
    }
    pub fn request<T: JsonSchema>(self) -> Self {
        self.0.request = Some(|g| g.subschema_for::<T>());
        self
    }
    pub fn response<T: JsonSchema>(self, status: u16) -> Self {
        self.0.response = Some((status, |g| g.subschema_for::<T>()));
        self
    }
    pub fn query(self, name: &'static str, description: &'static str) -> Self {
        self.0.query.push((name, description));
        self
    }
}

fn filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        _ => panic!("unsupported method {m} in route registry"),
    }
}

impl Registry {
    pub fn new(state: AppState) -> Registry {
        Registry {
            state,
            router: Router::new(),
            specs: Vec::new(),
        }
    }

    /// Registers `handler` for `method path`, guarded by `permission`.
    pub fn route<H, T>(
        &mut self,
        method: Method,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> RouteDoc<'_>
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let st = self.state.clone();
        let guarded = on(filter(&method), handler).route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let st = st.clone();
                async move { crate::auth::guard(st, permission, req, next).await }
            },
        ));
        self.router = std::mem::take(&mut self.router).route(path, guarded);
        let api = crate::auth::is_api_path(path);
        self.specs.push(RouteSpec {
            method,
            path,
            permission,
            summary: "",
            tag: "",
            request: None,
            response: None,
            query: Vec::new(),
            api,
        });
        RouteDoc(self.specs.last_mut().expect("just pushed"))
    }

    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteSpec>) {
        (self.router, self.specs)
    }
}
