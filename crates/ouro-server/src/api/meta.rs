//! Health, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::Method;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ouro_core::Permission;
use serde_json::json;

use crate::AppState;
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    reg.route(Method::GET, "/healthz", Permission::Public, healthz)
        .doc("meta", "The process is alive");
    reg.route(Method::GET, "/readyz", Permission::Public, readyz)
        .doc(
            "meta",
            "The database is reachable and migrated; 503 otherwise",
        );
    reg.route(Method::GET, "/metrics", Permission::Public, metrics)
        .doc("meta", "Prometheus metrics (text format)");
    reg.route(
        Method::GET,
        "/api/v1/openapi.json",
        Permission::Public,
        openapi,
    )
    .doc("meta", "This API's OpenAPI 3.1 document");
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.store.ping().await {
        Ok(()) => axum::Json(json!({"status": "ready", "database": st.store.backend().name()}))
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "unavailable", "database": st.store.backend().name()})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&st),
    )
        .into_response()
}

async fn openapi(State(st): State<AppState>) -> Response {
    let doc = st
        .openapi
        .get_or_init(|| crate::openapi::document(crate::registry(st.clone()).specs()));
    axum::Json(doc.clone()).into_response()
}
