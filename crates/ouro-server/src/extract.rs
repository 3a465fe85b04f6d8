//! Extractors whose rejections use Ouro's error shape.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use ouro_store::accounts::User;
use ouro_store::projects::Project;

use crate::auth::Principal;
use crate::error::ApiError;
use ouro_core::{ErrorCode, OuroError, Role};

/// JSON body; rejections become `request.*` errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; an undecodable segment (invalid UTF-8 included) is a 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters; unknown or mistyped values are a 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// What the route guard established about the caller before the handler runs.
#[derive(Clone, Default)]
pub struct Ctx {
    pub principal: Option<Principal>,
    /// For project routes: the project and the caller's effective role in it.
    pub project: Option<(Project, Role)>,
    pub client_ip: String,
}

impl Ctx {
    pub fn user(&self) -> Result<&User, ApiError> {
        self.principal.as_ref().map(|p| &p.user).ok_or_else(|| {
            ApiError(OuroError::new(
                ErrorCode::AuthRequired,
                "sign in or send a token",
            ))
        })
    }

    pub fn actor(&self) -> ouro_core::Actor {
        self.principal
            .as_ref()
            .map(|p| p.user.actor())
            .unwrap_or(ouro_core::Actor::Anonymous)
    }

    pub fn project(&self) -> Result<&Project, ApiError> {
        self.project
            .as_ref()
            .map(|p| &p.0)
            .ok_or_else(|| ApiError(OuroError::internal()))
    }

    pub fn role(&self) -> Option<Role> {
        self.project.as_ref().map(|p| p.1)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Ctx>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "route registered without its guard");
            ApiError(OuroError::internal())
        })
    }
}
