//! Plan: an item's links (to items and to ledger subjects), its trail through the loop, and
//! deleting an item.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{OuroError, Permission, Role};
use ouro_plan::items;
use ouro_plan::links::{self, ItemLink, NewSubject, SubjectLink};
use ouro_plan::trail::{self, Trail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Path};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write) = (InProject(Role::Viewer), InProject(Role::Developer));
    let links_path = "/api/v1/projects/{slug}/items/{key}/links";
    reg.route(Method::GET, links_path, read, list)
        .doc(
            "items",
            "An item's links: to other items (both directions) and to ledger subjects (commits, change requests, ...)",
        )
        .response::<Links>(200);
    reg.route(Method::POST, links_path, write, create)
        .doc(
            "items",
            "Link the item to another item (`kind` + `target`) or to a ledger subject (`subject`); 409 item.link_exists",
        )
        .request::<NewLink>()
        .response::<CreatedLink>(201);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/items/{key}/links/{id}",
        write,
        remove,
    )
    .doc(
        "items",
        "Remove an item link (by its id, from either item's side)",
    );
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/items/{key}/trail",
        read,
        get_trail,
    )
    .doc(
        "items",
        "Where the item's change is in the loop: commits, change requests, pipelines, releases, deployments per environment, incidents, each with its status",
    )
    .response::<Trail>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/items/{key}",
        InProject(Role::Maintainer),
        delete_item,
    )
    .doc(
        "items",
        "Delete an item (maintainers); its key is never reused and its history stays in the ledger",
    );
}

#[derive(Debug, Serialize, JsonSchema)]
struct Links {
    items: Vec<ItemLink>,
    subjects: Vec<SubjectLink>,
}

/// Either an item link (`kind` and `target`) or a subject link (`subject`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewLink {
    /// `blocks`, `relates` or `duplicates`.
    kind: Option<String>,
    /// The other item's key.
    target: Option<String>,
    subject: Option<NewSubject>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
enum CreatedLink {
    Item(ItemLink),
    Subject(SubjectLink),
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<Json<Links>> {
    let mut c = st.store.read().await?;
    let item = items::get(&mut c, ctx.project()?.id, &key)
        .await?
        .ok_or_else(|| ApiError(items::not_found(&key)))?;
    Ok(Json(Links {
        items: links::list(&mut c, item.id).await?,
        subjects: links::list_subjects(&mut c, item.id).await?,
    }))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    Json(body): Json<NewLink>,
) -> ApiResult<impl IntoResponse> {
    let project = ctx.project()?;
    let created = match (body.kind, body.target, body.subject) {
        (Some(kind), Some(target), None) => CreatedLink::Item(
            links::link(&st.store, project, &ctx.actor(), &key, &kind, &target).await?,
        ),
        (None, None, Some(subject)) => {
            match links::link_subject(&st.store, project, &ctx.actor(), &key, &subject, None)
                .await?
            {
                Some(l) => CreatedLink::Subject(l),
                None => {
                    return Err(ApiError(OuroError::new(
                        ouro_core::ErrorCode::LinkExists,
                        format!(
                            "{key} is already linked to {} {}",
                            subject.subject_type, subject.id
                        ),
                    )));
                }
            }
        }
        _ => {
            return Err(ApiError(OuroError::field(
                "kind",
                "give `kind` and `target` for an item link, or `subject` alone",
            )));
        }
    };
    Ok((StatusCode::CREATED, Json(created)))
}

async fn remove(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key, id)): Path<(String, String, i64)>,
) -> ApiResult<StatusCode> {
    links::unlink(&st.store, ctx.project()?, &ctx.actor(), &key, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_trail(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<Json<Trail>> {
    let mut c = st.store.read().await?;
    let item = items::get(&mut c, ctx.project()?.id, &key)
        .await?
        .ok_or_else(|| ApiError(items::not_found(&key)))?;
    Ok(Json(trail::of_item(&mut c, item.id).await?))
}

async fn delete_item(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    items::delete(&st.store, ctx.project()?, &ctx.actor(), &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
