//! Plan settings: a project's item types and workflows (states, categories, transitions).
//! Viewers read them through `GET .../workflows`; maintainers change them here.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{Permission, Role};
use ouro_plan::config::{self, NewState, NewType, StatePatch, Transitions, TypePatch};
use ouro_plan::fields::{self, Field, FieldPatch, NewField};
use ouro_plan::workflow::{self, ItemType, Workflows};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let read = Permission::Project(Role::Viewer);
    let write = Permission::Project(Role::Maintainer);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/types",
        read,
        list_types,
    )
    .doc("plan-settings", "The project's item types, enabled or not")
    .response::<Vec<ItemType>>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/types",
        write,
        create_type,
    )
    .doc(
        "plan-settings",
        "Add an item type of a kind, following an existing workflow (default `standard`)",
    )
    .request::<NewType>()
    .response::<ItemType>(201);
    reg.route(
        Method::PATCH,
        "/api/v1/projects/{slug}/types/{name}",
        write,
        patch_type,
    )
    .doc(
        "plan-settings",
        "Rename (its items follow) or enable/disable an item type; a disabled type refuses new items",
    )
    .request::<TypePatch>()
    .response::<ItemType>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/workflows/{workflow}/states",
        write,
        add_state,
    )
    .doc(
        "plan-settings",
        "Add a state at the end of a workflow (a new workflow name creates the workflow)",
    )
    .request::<NewState>()
    .response::<workflow::State>(201);
    reg.route(
        Method::PATCH,
        "/api/v1/projects/{slug}/workflows/{workflow}/states/{name}",
        write,
        patch_state,
    )
    .doc(
        "plan-settings",
        "Rename a state or change its category; items in it and transitions follow",
    )
    .request::<StatePatch>()
    .response::<workflow::State>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/workflows/{workflow}/states/{name}",
        write,
        delete_state,
    )
    .doc(
        "plan-settings",
        "Delete a state; 409 plan.state_in_use (with `details.items`) while items are in it",
    );
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/workflows/{workflow}/transitions",
        write,
        put_transitions,
    )
    .doc(
        "plan-settings",
        "Replace all transitions of a workflow; returns the project's workflows",
    )
    .request::<Transitions>()
    .response::<Workflows>(200);
    let path = "/api/v1/projects/{slug}/fields";
    let one = "/api/v1/projects/{slug}/fields/{name}";
    reg.route(Method::GET, path, read, list_fields)
        .doc(
            "plan-settings",
            "The project's custom fields in display order",
        )
        .response::<Vec<Field>>(200);
    reg.route(Method::POST, path, write, create_field)
        .doc(
            "plan-settings",
            "Add a custom field: text, number, select (with options), user or date",
        )
        .request::<NewField>()
        .response::<Field>(201);
    reg.route(Method::PATCH, one, write, patch_field)
        .doc(
            "plan-settings",
            "Change a custom field's label or a select field's options",
        )
        .request::<FieldPatch>()
        .response::<Field>(200);
    reg.route(Method::DELETE, one, write, delete_field)
        .doc("plan-settings", "Delete a custom field and all its values");
}

async fn list_fields(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<Field>>> {
    Ok(Json(
        fields::list(&mut st.store.read().await?, ctx.project()?.id).await?,
    ))
}

async fn create_field(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<NewField>,
) -> ApiResult<impl IntoResponse> {
    let f = fields::create(&st.store, ctx.project()?, &ctx.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(f)))
}

async fn patch_field(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<FieldPatch>,
) -> ApiResult<Json<Field>> {
    Ok(Json(
        fields::update(&st.store, ctx.project()?, &ctx.actor(), &name, body).await?,
    ))
}

async fn delete_field(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    fields::delete(&st.store, ctx.project()?, &ctx.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_types(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<ItemType>>> {
    Ok(Json(
        workflow::for_project(&st.store, ctx.project()?.id)
            .await?
            .types,
    ))
}

async fn create_type(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<NewType>,
) -> ApiResult<impl IntoResponse> {
    let t = config::create_type(&st.store, ctx.project()?, &ctx.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

async fn patch_type(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<TypePatch>,
) -> ApiResult<Json<ItemType>> {
    Ok(Json(
        config::update_type(&st.store, ctx.project()?, &ctx.actor(), &name, body).await?,
    ))
}

async fn add_state(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, wf)): Path<(String, String)>,
    Json(body): Json<NewState>,
) -> ApiResult<impl IntoResponse> {
    let s = config::add_state(&st.store, ctx.project()?, &ctx.actor(), &wf, body).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

async fn patch_state(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, wf, name)): Path<(String, String, String)>,
    Json(body): Json<StatePatch>,
) -> ApiResult<Json<workflow::State>> {
    Ok(Json(
        config::update_state(&st.store, ctx.project()?, &ctx.actor(), &wf, &name, body).await?,
    ))
}

async fn delete_state(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, wf, name)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    config::delete_state(&st.store, ctx.project()?, &ctx.actor(), &wf, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_transitions(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, wf)): Path<(String, String)>,
    Json(body): Json<Transitions>,
) -> ApiResult<Json<Workflows>> {
    Ok(Json(
        config::set_transitions(&st.store, ctx.project()?, &ctx.actor(), &wf, body).await?,
    ))
}
