//! CSV export and import of work items (docs/csv.md).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_plan::csv::{self, ImportResult};
use ouro_plan::items::{self, ItemFilter, Search};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/items.csv",
        InProject(Role::Viewer),
        export,
    )
    .doc(
        "items",
        "The items matching `q` as CSV (text/csv), in backlog order; formula-looking cells get a leading `'`",
    )
    .query("q", "A query in the item query language, as on the items list")
    .response::<String>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/imports",
        InProject(Role::Developer),
        import,
    )
    .doc(
        "items",
        "Import items from a CSV body (Ouro export or Jira export columns); all or nothing, 422 lists bad rows in details.rows",
    )
    .query(
        "dry_run",
        "true: check and preview without writing anything",
    )
    .response::<ImportResult>(201);
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    q: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ImportQuery {
    #[serde(default)]
    dry_run: bool,
}

/// All pages of the search, up to the import row limit, so an export can be imported back.
async fn export(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(eq): Query<ExportQuery>,
) -> ApiResult<Response> {
    let project = ctx.project()?;
    let mut all = Vec::new();
    let mut cursor = None;
    let mut ex = st.store.read().await?;
    loop {
        let page = items::search(
            &mut ex,
            project.id,
            &ItemFilter::default(),
            &Search {
                query: eq.q.clone().filter(|s| !s.trim().is_empty()),
                me: ctx.principal.as_ref().map(|p| p.user.id),
                cursor,
                limit: ouro_store::page::MAX_LIMIT,
            },
        )
        .await?;
        all.extend(page.items);
        match page.next_cursor {
            Some(c) if all.len() < csv::MAX_ROWS => cursor = Some(c),
            _ => break,
        }
    }
    let name = format!("attachment; filename=\"{}-items.csv\"", project.slug);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        csv::export(&all),
    )
        .into_response())
}

async fn import(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(iq): Query<ImportQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError(OuroError::new(
            ErrorCode::ValidationFailed,
            "the CSV must be UTF-8 text",
        ))
    })?;
    let out = csv::import(&st.store, ctx.project()?, &ctx.actor(), text, iq.dry_run).await?;
    let status = if iq.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(out)).into_response())
}
