//! Plan: files attached to work items. Uploads are the raw file as the request body (the name in
//! `?filename=`, the type in `Content-Type`), limited by `attachment_max_bytes` rather than
//! `max_body_bytes`. Downloads always come as attachments, and only a few image types keep their
//! type; everything else is `application/octet-stream`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_plan::attachments::{self, Attachment};
use ouro_plan::items;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write) = (InProject(Role::Viewer), InProject(Role::Developer));
    let path = "/api/v1/projects/{slug}/items/{key}/attachments";
    reg.route(Method::GET, path, read, list)
        .doc("items", "An item's attachments, oldest first")
        .response::<AttachmentList>(200);
    reg.route(Method::POST, path, write, upload)
        .doc(
            "items",
            "Attach a file: the raw bytes as the body, `?filename=NAME`, `Content-Type` of the file; 413 item.attachment_too_large above `attachment_max_bytes`",
        )
        .response::<Attachment>(201);
    let one = "/api/v1/projects/{slug}/items/{key}/attachments/{id}";
    reg.route(Method::GET, one, read, download).doc(
        "items",
        "Download an attachment (`Content-Disposition: attachment`; images png/jpeg/gif/webp keep their type, anything else is application/octet-stream)",
    );
    reg.route(Method::DELETE, one, write, remove).doc(
        "items",
        "Remove an attachment (its uploader, or a maintainer)",
    );
}

#[derive(Debug, Serialize, JsonSchema)]
struct AttachmentList {
    items: Vec<Attachment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadParams {
    filename: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<Json<AttachmentList>> {
    let mut c = st.store.read().await?;
    let item = items::get(&mut c, ctx.project()?.id, &key)
        .await?
        .ok_or_else(|| ApiError(items::not_found(&key)))?;
    Ok(Json(AttachmentList {
        items: attachments::list(&mut c, item.id).await?,
    }))
}

/// Reads a body of at most `max` bytes; more is `item.attachment_too_large`.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<axum::body::Bytes, OuroError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(attachments::too_large(max));
    }
    axum::body::to_bytes(body, max).await.map_err(|_| {
        // The only way reading a request body fails here is going over the limit (or the client
        // hanging up, when nobody reads the answer anyway).
        attachments::too_large(max)
    })
}

/// Stores the blob (off the runtime) and records the attachment.
pub(crate) async fn save(
    st: &AppState,
    ctx: &Ctx,
    key: &str,
    filename: &str,
    content_type: Option<&str>,
    bytes: axum::body::Bytes,
) -> Result<Attachment, ApiError> {
    let project = ctx.project()?;
    // Refuse an unknown item before writing anything.
    {
        let mut c = st.store.read().await?;
        items::get(&mut c, project.id, key)
            .await?
            .ok_or_else(|| ApiError(items::not_found(key)))?;
    }
    let dir = st.settings.data_dir.clone();
    let size = bytes.len() as i64;
    let data = bytes.clone();
    let sha = tokio::task::spawn_blocking(move || attachments::write_blob(&dir, &data))
        .await
        .map_err(|_| ApiError(OuroError::internal()))?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot store an attachment");
            ApiError(OuroError::new(
                ErrorCode::Internal,
                "the file could not be stored",
            ))
        })?;
    let content_type = attachments::sanitize_content_type(content_type);
    Ok(attachments::add(
        &st.store,
        project,
        &ctx.actor(),
        key,
        filename,
        &content_type,
        size,
        &sha,
    )
    .await?)
}

async fn upload(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let Some(filename) = params.filename.filter(|f| !f.trim().is_empty()) else {
        return Err(ApiError(OuroError::field(
            "filename",
            "give the file name as ?filename=NAME",
        )));
    };
    let bytes = read_limited(&headers, body, st.settings.attachment_max_bytes).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let a = save(&st, &ctx, &key, &filename, content_type, bytes).await?;
    Ok((StatusCode::CREATED, Json(a)))
}

/// `attachment; filename*=UTF-8''...` with the name percent-encoded (RFC 8187).
pub(crate) fn disposition(filename: &str) -> String {
    let mut enc = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{enc}")
}

async fn download(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key, id)): Path<(String, String, i64)>,
) -> ApiResult<Response> {
    let a = {
        let mut c = st.store.read().await?;
        attachments::get(&mut c, ctx.project()?.id, &key, id).await?
    };
    let path = attachments::blob_path(&st.settings.data_dir, &a.sha256);
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        tracing::error!(error = %e, sha256 = %a.sha256, "an attachment's file is missing");
        ApiError(OuroError::new(
            ErrorCode::Internal,
            "the attachment's file is missing from the data directory",
        ))
    })?;
    let mut res = Body::from(bytes).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(attachments::safe_content_type(&a.content_type)),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition(&a.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(res)
}

async fn remove(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key, id)): Path<(String, String, i64)>,
) -> ApiResult<StatusCode> {
    let manage = ctx.role().is_some_and(|r| r >= Role::Maintainer);
    attachments::remove(&st.store, ctx.project()?, &ctx.actor(), manage, &key, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::disposition;

    #[test]
    fn disposition_encodes_the_name() {
        assert_eq!(
            disposition("a b\u{e9}.txt"),
            "attachment; filename*=UTF-8''a%20b%C3%A9.txt"
        );
        assert_eq!(
            disposition("x;\"y\".png"),
            "attachment; filename*=UTF-8''x%3B%22y%22.png"
        );
    }
}
