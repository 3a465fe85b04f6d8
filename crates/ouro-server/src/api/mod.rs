//! The JSON API under `/api/v1`, plus health, metrics and the OpenAPI document.

pub mod artifacts;
pub mod attachments;
pub mod boards;
pub mod build_vars;
pub mod change_requests;
pub mod code_browse;
pub mod cr_comments;
pub mod csv;
pub mod deploy;
pub mod events;
pub mod intake;
pub mod items;
pub mod links;
pub mod meta;
pub mod notifications;
pub mod pipeline_logs;
pub mod pipelines;
pub mod plan_config;
pub mod projects;
pub mod promotions;
pub mod push_rules;
pub mod release_bundles;
pub mod release_settings;
pub mod releases;
pub mod repos;
pub mod rules;
pub mod runners;
pub mod saved_queries;
pub mod test_results;
pub mod users;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use ouro_core::{ErrorCode, OuroError};
use serde::Deserialize;

use crate::error::ApiError;
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    meta::register(reg);
    projects::register(reg);
    users::register(reg);
    events::register(reg);
    items::register(reg);
    links::register(reg);
    attachments::register(reg);
    rules::register(reg);
    csv::register(reg);
    saved_queries::register(reg);
    plan_config::register(reg);
    boards::register(reg);
    notifications::register(reg);
    intake::register(reg);
    repos::register(reg);
    change_requests::register(reg);
    cr_comments::register(reg);
    push_rules::register(reg);
    code_browse::register(reg);
    pipelines::register(reg);
    artifacts::register(reg);
    pipeline_logs::register(reg);
    build_vars::register(reg);
    runners::register(reg);
    test_results::register(reg);
    promotions::register(reg);
    deploy::register(reg);
    release_settings::register(reg);
    release_bundles::register(reg);
    releases::register(reg);
    crate::git_http::register(reg);
    crate::webhooks::register(reg);
}

/// `?limit=N&cursor=C`, the same on every list.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn to_req(&self) -> Result<ouro_store::PageReq, ApiError> {
        let after = match self.cursor.as_deref() {
            None | Some("") => 0,
            Some(c) => c.parse::<i64>().map_err(|_| {
                ApiError(OuroError::new(
                    ErrorCode::InvalidQuery,
                    "invalid cursor: pass back next_cursor as given",
                ))
            })?,
        };
        if let Some(l) = self.limit
            && !(1..=ouro_store::page::MAX_LIMIT).contains(&l)
        {
            return Err(ApiError(OuroError::new(
                ErrorCode::InvalidQuery,
                format!("limit must be 1 to {}", ouro_store::page::MAX_LIMIT),
            )));
        }
        Ok(ouro_store::PageReq::new(after, self.limit))
    }
}

/// 404 for paths no route matches (JSON for the API, a page for the UI).
pub async fn fallback(req: Request) -> Response {
    let err = OuroError::new(
        ErrorCode::RouteNotFound,
        format!("no route for {} {}", req.method(), req.uri().path()),
    );
    if crate::auth::is_api_path(req.uri().path()) {
        ApiError(err).into_response()
    } else {
        crate::ui::plain_error_page(&err)
    }
}

pub async fn method_not_allowed(req: Request) -> Response {
    ApiError(OuroError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    ))
    .into_response()
}

/// The outermost layer: security headers on every response, and a panic in a handler becomes a
/// logged 500 with the error shape instead of a dropped connection.
pub async fn catch_panic_and_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let mut res = match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(%path, "handler panicked");
            ApiError(OuroError::internal()).into_response()
        }
    };
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !crate::auth::is_api_path(&path) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'"),
        );
    }
    res
}
