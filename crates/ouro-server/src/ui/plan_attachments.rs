//! The item page's Attachments section: a multipart upload form (the CSRF token rides in the
//! query string, see `auth::check_csrf`) and a delete button per file. Downloads use the JSON
//! API's download route, which serves every file as an attachment.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, header};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_plan::attachments::{self, Attachment};

use crate::AppState;
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::common::{When, fail, redirect_with_flash};
use crate::ui::plan::{build_item, item_href};
use crate::ui::{UiResult, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let write = InProject(Role::Developer);
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/attachments",
        write,
        upload,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/attachments/{id}/delete",
        write,
        remove,
    );
}

/// One attachment as the item page lists it.
pub struct AttachmentView {
    pub id: i64,
    pub filename: String,
    /// Human size: `512 B`, `3.4 KiB`, `1.2 MiB`.
    pub size: String,
    pub uploader: String,
    pub when: When,
    pub can_delete: bool,
}

fn human_size(n: i64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{:.1} MiB", f / (K * K))
    }
}

impl AttachmentView {
    pub fn of(ctx: &Ctx, list: Vec<Attachment>) -> Vec<AttachmentView> {
        let uid = ctx.principal.as_ref().map(|p| p.user.id);
        let manage = ctx.role() >= Some(Role::Maintainer);
        let develop = ctx.role() >= Some(Role::Developer);
        list.into_iter()
            .map(|a| AttachmentView {
                id: a.id,
                size: human_size(a.size),
                uploader: a.uploader.unwrap_or_else(|| "deleted user".into()),
                when: When::of(a.created_at),
                can_delete: develop
                    && (manage || (a.uploader_id.is_some() && a.uploader_id == uid)),
                filename: a.filename,
            })
            .collect()
    }
}

/// One part of a `multipart/form-data` body.
pub(crate) struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// The value of `param` (`name`, `filename`, `boundary`) in a header value, unquoted.
fn header_param(value: &str, param: &str) -> Option<String> {
    for piece in value.split(';').skip(1) {
        let piece = piece.trim();
        let Some((k, v)) = piece.split_once('=') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case(param) {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        return Some(v.to_string());
    }
    None
}

/// Splits a `multipart/form-data` body. `None` when it is not one. A quoted file name containing
/// `;` is cut there; browsers percent-encode quotes and line breaks in names, and the name is
/// sanitised afterwards anyway.
pub(crate) fn parse_multipart<'a>(content_type: &str, body: &'a [u8]) -> Option<Vec<Part<'a>>> {
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return None;
    }
    let boundary = header_param(content_type, "boundary")?;
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut pos = find(body, delim.as_bytes(), 0)? + delim.len();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Some(parts);
        }
        if body.get(pos..pos + 2) != Some(b"\r\n") {
            return None;
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos)?;
        let head = std::str::from_utf8(&body[pos..head_end]).ok()?;
        let data_start = head_end + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), data_start)?;
        let (mut name, mut filename, mut ctype) = (String::new(), None, None);
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                name = header_param(v, "name").unwrap_or_default();
                filename = header_param(v, "filename");
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                ctype = Some(v.trim().to_string());
            }
        }
        parts.push(Part {
            name,
            filename,
            content_type: ctype,
            data: &body[data_start..next],
        });
        pos = next + 2 + delim.len();
    }
}

async fn refuse(st: &AppState, ctx: &Ctx, key: &str, e: OuroError) -> UiResult {
    let status = crate::auth::status_of(e.code);
    if !status.is_client_error() {
        return Err(fail(ctx, e));
    }
    let project = ctx.project()?;
    let mut p = build_item(st, ctx, project, key).await?;
    p.attachment_error = Some(e.message);
    Ok(render_status(status, &p))
}

async fn upload(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> UiResult {
    let project = ctx.project()?;
    let max = st.settings.attachment_max_bytes;
    // Room for the multipart framing around the file.
    let bytes = match crate::api::attachments::read_limited(&headers, body, max + 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return refuse(&st, &ctx, &key, attachments::too_large(max)).await,
    };
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let file = parse_multipart(ctype, &bytes).and_then(|parts| {
        parts
            .into_iter()
            .find(|p| p.name == "file" && p.filename.is_some())
            .map(|p| (p.filename.unwrap_or_default(), p.content_type, p.data))
    });
    let Some((filename, content_type, data)) = file else {
        return refuse(
            &st,
            &ctx,
            &key,
            OuroError::field("file", "choose a file to upload"),
        )
        .await;
    };
    if filename.trim().is_empty() {
        return refuse(
            &st,
            &ctx,
            &key,
            OuroError::field("file", "choose a file to upload"),
        )
        .await;
    }
    if data.len() > max {
        return refuse(&st, &ctx, &key, attachments::too_large(max)).await;
    }
    let data = bytes.slice_ref(data);
    match crate::api::attachments::save(&st, &ctx, &key, &filename, content_type.as_deref(), data)
        .await
    {
        Ok(a) => Ok(redirect_with_flash(
            &format!(
                "{}#attachments",
                item_href(project, &key.to_ascii_uppercase())
            ),
            &format!("Attached {}.", a.filename),
        )),
        Err(e) => {
            if e.0.code == ErrorCode::ItemNotFound {
                return Err(fail(&ctx, e.0));
            }
            refuse(&st, &ctx, &key, e.0).await
        }
    }
}

async fn remove(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key, id)): Path<(String, String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let manage = ctx.role() >= Some(Role::Maintainer);
    let a = attachments::remove(&st.store, project, &ctx.actor(), manage, &key, id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!(
            "{}#attachments",
            item_href(project, &key.to_ascii_uppercase())
        ),
        &format!("Removed {}.", a.filename),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_split() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a b.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ\r\nwith\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n--XyZ--\r\n";
        let body = String::from_utf8_lossy(body).replace("--XyZ\r\nwith\r\n", "");
        let parts = parse_multipart("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "file");
        assert_eq!(parts[0].filename.as_deref(), Some("a b.txt"));
        assert_eq!(parts[0].content_type.as_deref(), Some("text/plain"));
        assert_eq!(parts[0].data, b"hello");
        assert_eq!(parts[1].name, "note");
        assert_eq!(parts[1].filename, None);
        assert!(parse_multipart("text/plain", body.as_bytes()).is_none());
        assert!(parse_multipart("multipart/form-data; boundary=\"XyZ\"", b"junk").is_none());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 * 1024 + 400), "3.4 KiB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MiB");
    }
}
