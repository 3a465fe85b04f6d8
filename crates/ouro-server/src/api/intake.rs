//! Intake: the project's public feedback form setting, and triage of feedback and incidents.

use axum::extract::State;
use axum::http::Method;
use ouro_core::{Permission, Role};
use ouro_plan::intake::{self, Decision, Intake};
use ouro_plan::items::Item;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write, manage) = (
        InProject(Role::Viewer),
        InProject(Role::Developer),
        InProject(Role::Maintainer),
    );
    let path = "/api/v1/projects/{slug}/intake";
    reg.route(Method::GET, path, read, get)
        .doc(
            "intake",
            "The project's intake settings: whether the public feedback form is open",
        )
        .response::<Intake>(200);
    reg.route(Method::PUT, path, manage, put)
        .doc(
            "intake",
            "Open or close the public feedback form at /p/{slug}/feedback (public projects only)",
        )
        .request::<Intake>()
        .response::<Intake>(200);
    reg.route(Method::GET, "/api/v1/projects/{slug}/triage", read, list)
        .doc(
            "intake",
            "Feedback and incident items in a to-do state that were not triaged yet, oldest first",
        )
        .response::<Vec<Item>>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/triage/{key}",
        write,
        decide,
    )
    .doc(
        "intake",
        "Triage an item: `accept` (with a new `type`), `merge` (`into` another item) or `decline` (with a `reason`); 409 triage.not_pending if it is not waiting",
    )
    .request::<Decision>()
    .response::<Item>(200);
}

async fn get(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Intake>> {
    Ok(Json(
        intake::get(&mut st.store.read().await?, ctx.project()?.id).await?,
    ))
}

async fn put(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(b): Json<Intake>,
) -> ApiResult<Json<Intake>> {
    Ok(Json(
        intake::set(&st.store, ctx.project()?, &ctx.actor(), b).await?,
    ))
}

async fn list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<Item>>> {
    Ok(Json(
        intake::pending(&mut st.store.read().await?, ctx.project()?.id).await?,
    ))
}

async fn decide(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    Json(b): Json<Decision>,
) -> ApiResult<Json<Item>> {
    Ok(Json(
        intake::triage(&st.store, ctx.project()?, &ctx.actor(), &key, b).await?,
    ))
}
