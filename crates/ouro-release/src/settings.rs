//! Per-project release settings (`release_settings`): the 0.x version rules, the first version
//! and the release notes template. A project without a row gets the defaults. Changing them
//! appends `release.settings_changed` in the same transaction.

use ouro_core::events as ev;
use ouro_core::{Actor, NewEvent, OuroError};
use ouro_store::{Executor, Store, StoreError, q};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::notes;
use crate::version::{self, Rules};

/// A project's release settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub rules: Rules,
    /// The project's notes template; `None` uses [`notes::DEFAULT_TEMPLATE`].
    pub notes_template: Option<String>,
    /// After a deployment of an approved promotion succeeded, request the promotion of the
    /// release to the next environment(s) of the path.
    pub auto_promote: bool,
    /// Who changed them last (`user:NAME`), `None` for the defaults.
    pub updated_by: Option<String>,
    /// Unix ms of the last change, `None` for the defaults.
    pub updated_at: Option<i64>,
}

/// A change to the settings: fields left `None` keep their value; `notes_template:
/// Some(None)` goes back to the default layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SettingsChange {
    pub zero_major_bumps_minor: Option<bool>,
    pub zero_minor_bumps_patch: Option<bool>,
    /// SemVer text (`0.1.0`, `v1.0.0`); a pre-release or build suffix is refused.
    pub initial_version: Option<String>,
    #[serde(default, with = "double_option")]
    pub notes_template: Option<Option<String>>,
    pub auto_promote: Option<bool>,
}

/// `Some(None)` for an explicit JSON `null`, `None` when the field is missing.
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// The settings of project `project_id` (the defaults when it never changed them).
pub async fn get(ex: &mut impl Executor, project_id: i64) -> Result<Settings, StoreError> {
    let row = q(
        "SELECT zero_major_bumps_minor, zero_minor_bumps_patch, initial_version, notes_template, \
         auto_promote, updated_by, updated_at FROM release_settings WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_optional(ex)
    .await?;
    let Some(r) = row else {
        return Ok(Settings::default());
    };
    let initial = r.text("initial_version")?;
    Ok(Settings {
        rules: Rules {
            zero_major_bumps_minor: r.bool("zero_major_bumps_minor")?,
            zero_minor_bumps_patch: r.bool("zero_minor_bumps_patch")?,
            initial: Version::parse(&initial)
                .map_err(|e| StoreError::Decode(format!("initial_version {initial:?}: {e}")))?,
        },
        notes_template: r.opt_text("notes_template")?,
        auto_promote: r.bool("auto_promote")?,
        updated_by: Some(r.text("updated_by")?),
        updated_at: Some(r.i64("updated_at")?),
    })
}

/// Checks that `template` compiles and renders the notes of a small sample release, so a broken
/// template is refused when it is saved rather than when a release is made.
pub fn check_template(template: &str) -> Result<(), OuroError> {
    let sample = crate::changes::Commit::new(
        "0123456789abcdef0123456789abcdef01234567",
        vec![],
        "Sample Author",
        "author@example.com",
        0,
        "feat(sample)!: a sample change (DEMO-1)\n\nBREAKING CHANGE: a sample note",
    );
    let mut input = notes::NotesInput::new(
        Version::new(1, 0, 0),
        Some(Version::new(0, 9, 0)),
        "2026-01-01",
        vec![sample],
    );
    input.items = vec![notes::ItemRef {
        key: "DEMO-1".into(),
        title: "A sample item".into(),
    }];
    input.change_requests = vec![notes::CrRef {
        number: 1,
        title: "A sample change request".into(),
    }];
    notes::render(&input, Some(template)).map(|_| ())
}

/// Changes project `project_id`'s settings; validates them (`release.invalid_version` for the
/// initial version, `release.template_invalid` for the template) and appends
/// `release.settings_changed` with the changed fields. Returns the new settings.
pub async fn update(
    store: &Store,
    actor: &Actor,
    project_id: i64,
    change: &SettingsChange,
) -> Result<Settings, StoreError> {
    let mut tx = store.begin().await?;
    let old = get(&mut tx, project_id).await?;
    let mut new = old.clone();
    if let Some(v) = change.zero_major_bumps_minor {
        new.rules.zero_major_bumps_minor = v;
    }
    if let Some(v) = change.zero_minor_bumps_patch {
        new.rules.zero_minor_bumps_patch = v;
    }
    if let Some(text) = &change.initial_version {
        let v = version::explicit(text)
            .map_err(|e| e.with_details(json!({ "field": "initial_version" })))?;
        if !v.pre.is_empty() || !v.build.is_empty() {
            return Err(OuroError::new(
                ouro_core::ErrorCode::ReleaseInvalidVersion,
                "the first version is a plain MAJOR.MINOR.PATCH, without a pre-release or build suffix",
            )
            .with_details(json!({ "field": "initial_version" }))
            .into());
        }
        new.rules.initial = v;
    }
    if let Some(t) = &change.notes_template {
        let t = t
            .as_deref()
            .map(str::trim_end)
            .filter(|t| !t.trim().is_empty());
        if let Some(t) = t {
            check_template(t)?;
        }
        new.notes_template = t.map(|t| format!("{t}\n"));
    }
    if let Some(v) = change.auto_promote {
        new.auto_promote = v;
    }
    let mut changed = serde_json::Map::new();
    if new.auto_promote != old.auto_promote {
        changed.insert("auto_promote".into(), json!(new.auto_promote));
    }
    if new.rules.zero_major_bumps_minor != old.rules.zero_major_bumps_minor {
        changed.insert(
            "zero_major_bumps_minor".into(),
            json!(new.rules.zero_major_bumps_minor),
        );
    }
    if new.rules.zero_minor_bumps_patch != old.rules.zero_minor_bumps_patch {
        changed.insert(
            "zero_minor_bumps_patch".into(),
            json!(new.rules.zero_minor_bumps_patch),
        );
    }
    if new.rules.initial != old.rules.initial {
        changed.insert(
            "initial_version".into(),
            json!(new.rules.initial.to_string()),
        );
    }
    if new.notes_template != old.notes_template {
        // The template itself can be long: the event says whether there is one now.
        changed.insert("notes_template".into(), json!(new.notes_template.is_some()));
    }
    if changed.is_empty() {
        return Ok(old);
    }
    let now = ouro_core::time::now_ms();
    let by = actor.label();
    q(
        "INSERT INTO release_settings (project_id, zero_major_bumps_minor, zero_minor_bumps_patch, \
         initial_version, notes_template, updated_by, updated_at, auto_promote) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (project_id) DO UPDATE SET zero_major_bumps_minor = $2, \
         zero_minor_bumps_patch = $3, initial_version = $4, notes_template = $5, updated_by = $6, \
         updated_at = $7, auto_promote = $8",
    )
    .bind(project_id)
    .bind(new.rules.zero_major_bumps_minor)
    .bind(new.rules.zero_minor_bumps_patch)
    .bind(new.rules.initial.to_string())
    .bind(new.notes_template.clone())
    .bind(by.as_str())
    .bind(now)
    .bind(new.auto_promote)
    .execute(&mut tx)
    .await?;
    let slug = q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut tx)
        .await?
        .text("slug")?;
    tx.append(
        NewEvent::new(
            ev::RELEASE_SETTINGS_CHANGED,
            actor,
            project_id,
            json!({ "changes": changed }),
        )
        .in_project(project_id, &slug),
    )
    .await?;
    tx.commit().await?;
    new.updated_by = Some(by);
    new.updated_at = Some(now);
    Ok(new)
}
