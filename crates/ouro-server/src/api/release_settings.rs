//! Release: a project's release settings (0.x version rules, the first version, the notes
//! template, and `auto_promote`: request the next environment's promotion after a deployment
//! succeeded). Thin: `ouro_release::settings` validates and records them.

use axum::extract::State;
use axum::http::Method;
use ouro_core::{Permission, Role};
use ouro_release::settings::{self, Settings, SettingsChange};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/release-settings",
        Permission::Project(Role::Viewer),
        get_settings,
    )
    .doc(
        "release",
        "The project's release settings: 0.x version rules, the first version, the notes template (null: the default layout), `auto_promote`",
    )
    .response::<ReleaseSettings>(200);
    reg.route(
        Method::PATCH,
        "/api/v1/projects/{slug}/release-settings",
        Permission::Project(Role::Maintainer),
        patch_settings,
    )
    .doc(
        "release",
        "Change some release settings (fields left out keep their value; `notes_template: null` goes back to the default layout); 422 release.invalid_version, release.template_invalid",
    )
    .request::<ReleaseSettingsChange>()
    .response::<ReleaseSettings>(200);
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReleaseSettings {
    /// In 0.x, a breaking change bumps the minor version (not the major).
    pub zero_major_bumps_minor: bool,
    /// In 0.x, a feature bumps the patch version (not the minor).
    pub zero_minor_bumps_patch: bool,
    /// The version of the first release.
    pub initial_version: String,
    pub notes_template: Option<String>,
    /// After the deployment of an approved promotion succeeded, request the release's promotion
    /// to the next environment(s) of the path.
    pub auto_promote: bool,
}

impl From<Settings> for ReleaseSettings {
    fn from(s: Settings) -> Self {
        ReleaseSettings {
            zero_major_bumps_minor: s.rules.zero_major_bumps_minor,
            zero_minor_bumps_patch: s.rules.zero_minor_bumps_patch,
            initial_version: s.rules.initial.to_string(),
            notes_template: s.notes_template,
            auto_promote: s.auto_promote,
        }
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSettingsChange {
    pub zero_major_bumps_minor: Option<bool>,
    pub zero_minor_bumps_patch: Option<bool>,
    pub initial_version: Option<String>,
    /// A minijinja template; `null` goes back to the default layout.
    #[serde(default, deserialize_with = "some_option")]
    #[schemars(with = "Option<String>")]
    pub notes_template: Option<Option<String>>,
    pub auto_promote: Option<bool>,
}

/// A present field (even `null`) is `Some`; a missing one stays `None` (the default).
fn some_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

async fn get_settings(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<ReleaseSettings>> {
    let p = ctx.project()?;
    Ok(Json(
        settings::get(&mut st.store.read().await?, p.id)
            .await?
            .into(),
    ))
}

async fn patch_settings(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<ReleaseSettingsChange>,
) -> ApiResult<Json<ReleaseSettings>> {
    let p = ctx.project()?;
    let change = SettingsChange {
        zero_major_bumps_minor: body.zero_major_bumps_minor,
        zero_minor_bumps_patch: body.zero_minor_bumps_patch,
        initial_version: body.initial_version,
        notes_template: body.notes_template,
        auto_promote: body.auto_promote,
    };
    Ok(Json(
        settings::update(&st.store, &ctx.actor(), p.id, &change)
            .await?
            .into(),
    ))
}
