//! Turns [`OuroError`] into HTTP responses with the one error shape, and maps axum's extractor
//! rejections onto stable codes so no malformed request can produce a 500 or an unshaped body.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ouro_core::{ErrorCode, OuroError};
use ouro_store::StoreError;

/// An error response: `{"error":{"code","message","details"}}` with the code's status.
#[derive(Debug)]
pub struct ApiError(pub OuroError);

pub type ApiResult<T> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (status, axum::Json(self.0.body())).into_response();
        res.extensions_mut().insert(self.0.code);
        res
    }
}

impl From<OuroError> for ApiError {
    fn from(e: OuroError) -> Self {
        ApiError(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(e.into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonSyntaxError(_) => ErrorCode::MalformedJson,
            JsonRejection::JsonDataError(_) => ErrorCode::InvalidBody,
            JsonRejection::MissingJsonContentType(_) => ErrorCode::UnsupportedMediaType,
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
            _ => ErrorCode::MalformedJson,
        };
        let message = match code {
            ErrorCode::UnsupportedMediaType => {
                "send the body as JSON with Content-Type: application/json".to_string()
            }
            ErrorCode::BodyTooLarge => {
                "the request body is larger than the server accepts (max_body_bytes)".to_string()
            }
            _ => r.body_text(),
        };
        ApiError(OuroError::new(code, message))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError(OuroError::new(ErrorCode::InvalidPath, r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError(OuroError::new(ErrorCode::InvalidQuery, r.body_text()))
    }
}

pub fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError(OuroError::new(code, message))
}
