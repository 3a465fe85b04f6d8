//! Custom fields: per-project definitions (text, number, select, user, date) and their values
//! per item. Values are stored as text in `plan_field_values`; items show them as
//! `"fields": {"name": "value"}`. Definition changes append `plan.config_changed`.

use std::collections::BTreeMap;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Executor, Row, Store, StoreError, Tx, on_unique, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const MAX_FIELDS: i64 = 50;
pub const MAX_TEXT: usize = 10_000;
pub const MAX_OPTIONS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Text,
    Number,
    Select,
    User,
    Date,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Select => "select",
            FieldType::User => "user",
            FieldType::Date => "date",
        }
    }
    fn parse(s: &str) -> Option<FieldType> {
        [
            FieldType::Text,
            FieldType::Number,
            FieldType::Select,
            FieldType::User,
            FieldType::Date,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Field {
    #[serde(skip)]
    pub id: i64,
    /// Lower-case identifier used in `fields` of items: `[a-z][a-z0-9_]*`, at most 40.
    pub name: String,
    /// What people see.
    pub label: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// The allowed values of a select field (empty otherwise).
    pub options: Vec<String>,
    pub position: i64,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewField {
    pub name: String,
    /// Defaults to the name.
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Required for select fields: 1 to 100 distinct options.
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldPatch {
    pub label: Option<String>,
    /// Replaces a select field's options; values no longer allowed stay on items until edited.
    pub options: Option<Vec<String>>,
}

fn field_not_found(name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::PlanFieldNotFound,
        format!("custom field {name:?} does not exist in this project"),
    )
}

fn from_row(r: &Row) -> Result<Field, StoreError> {
    let t = r.text("type")?;
    Ok(Field {
        id: r.i64("id")?,
        name: r.text("name")?,
        label: r.text("label")?,
        field_type: FieldType::parse(&t)
            .ok_or_else(|| StoreError::Decode(format!("unknown field type {t:?}")))?,
        options: serde_json::from_str(&r.text("options")?)
            .map_err(|e| StoreError::Decode(format!("field options: {e}")))?,
        position: r.i64("position")?,
    })
}

fn validate_name(n: &str) -> Result<String, OuroError> {
    let ok = !n.is_empty()
        && n.len() <= 40
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(OuroError::field(
            "name",
            "use 1 to 40 characters: a lower-case letter, then letters, digits or _",
        ));
    }
    Ok(n.to_string())
}

fn validate_label(l: &str) -> Result<String, OuroError> {
    let l = l.trim();
    let n = l.chars().count();
    if n == 0 || n > 100 || l.chars().any(char::is_control) {
        return Err(OuroError::field(
            "label",
            "the label must be 1 to 100 characters without control characters",
        ));
    }
    Ok(l.to_string())
}

fn validate_options(t: FieldType, options: &[String]) -> Result<Vec<String>, OuroError> {
    if t != FieldType::Select {
        if !options.is_empty() {
            return Err(OuroError::field(
                "options",
                "only select fields have options",
            ));
        }
        return Ok(Vec::new());
    }
    let mut out: Vec<String> = Vec::new();
    for o in options {
        let o = o.trim();
        if o.is_empty() || o.chars().count() > 100 || o.chars().any(char::is_control) {
            return Err(OuroError::field(
                "options",
                "options must be 1 to 100 characters without control characters",
            ));
        }
        if !out.iter().any(|x| x == o) {
            out.push(o.to_string());
        }
    }
    if out.is_empty() || out.len() > MAX_OPTIONS {
        return Err(OuroError::field(
            "options",
            format!("a select field needs 1 to {MAX_OPTIONS} options"),
        ));
    }
    Ok(out)
}

/// The project's fields in display order.
pub async fn list(ex: &mut impl Executor, project_id: i64) -> Result<Vec<Field>, StoreError> {
    q("SELECT * FROM plan_fields WHERE project_id = $1 ORDER BY position, id")
        .bind(project_id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

async fn one(tx: &mut Tx, project_id: i64, name: &str) -> Result<Field, StoreError> {
    let r = q("SELECT * FROM plan_fields WHERE project_id = $1 AND name = $2")
        .bind(project_id)
        .bind(name)
        .fetch_optional(tx)
        .await?
        .ok_or_else(|| field_not_found(name))?;
    from_row(&r)
}

async fn changed(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    payload: Value,
) -> Result<(), StoreError> {
    tx.append(
        NewEvent::new(ev::PLAN_CONFIG_CHANGED, actor, project.id, payload)
            .in_project(project.id, &project.slug),
    )
    .await?;
    Ok(())
}

pub async fn create(
    store: &Store,
    project: &Project,
    actor: &Actor,
    input: NewField,
) -> Result<Field, StoreError> {
    let name = validate_name(&input.name)?;
    let label = validate_label(input.label.as_deref().unwrap_or(&name))?;
    let options = validate_options(input.field_type, &input.options)?;
    let mut tx = store.begin().await?;
    let r = q(
        "SELECT COUNT(*) AS n, COALESCE(MAX(position), 0) + 1 AS p FROM plan_fields \
               WHERE project_id = $1",
    )
    .bind(project.id)
    .fetch_one(&mut tx)
    .await?;
    if r.i64("n")? >= MAX_FIELDS {
        return Err(OuroError::field(
            "name",
            format!("a project can have at most {MAX_FIELDS} custom fields"),
        )
        .into());
    }
    on_unique(
        q(
            "INSERT INTO plan_fields (project_id, name, label, type, options, position) \
           VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(project.id)
        .bind(&name)
        .bind(&label)
        .bind(input.field_type.as_str())
        .bind(json!(options).to_string())
        .bind(r.i64("p")?)
        .execute(&mut tx)
        .await,
        || {
            OuroError::new(
                ErrorCode::PlanFieldExists,
                format!("a custom field named {name:?} already exists"),
            )
        },
    )?;
    let f = one(&mut tx, project.id, &name).await?;
    changed(
        &mut tx,
        project,
        actor,
        json!({"what": "field_added", "field": f}),
    )
    .await?;
    tx.commit().await?;
    Ok(f)
}

pub async fn update(
    store: &Store,
    project: &Project,
    actor: &Actor,
    name: &str,
    patch: FieldPatch,
) -> Result<Field, StoreError> {
    let label = patch.label.as_deref().map(validate_label).transpose()?;
    let mut tx = store.begin().await?;
    let cur = one(&mut tx, project.id, name).await?;
    let options = match &patch.options {
        Some(o) => validate_options(cur.field_type, o)?,
        None => cur.options.clone(),
    };
    let label = label.unwrap_or(cur.label.clone());
    q("UPDATE plan_fields SET label = $1, options = $2 WHERE id = $3")
        .bind(&label)
        .bind(json!(options).to_string())
        .bind(cur.id)
        .execute(&mut tx)
        .await?;
    let f = one(&mut tx, project.id, name).await?;
    changed(
        &mut tx,
        project,
        actor,
        json!({"what": "field_changed", "from": cur, "to": f}),
    )
    .await?;
    tx.commit().await?;
    Ok(f)
}

/// Deletes a field and every value of it.
pub async fn delete(
    store: &Store,
    project: &Project,
    actor: &Actor,
    name: &str,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let cur = one(&mut tx, project.id, name).await?;
    q("DELETE FROM plan_field_values WHERE field_id = $1")
        .bind(cur.id)
        .execute(&mut tx)
        .await?;
    q("DELETE FROM plan_fields WHERE id = $1")
        .bind(cur.id)
        .execute(&mut tx)
        .await?;
    changed(
        &mut tx,
        project,
        actor,
        json!({"what": "field_deleted", "field": cur.name}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Checks the values given for an item against the project's fields: each becomes the text to
/// store, or `None` to clear it (JSON null or ""). Errors name `fields.<name>`.
pub async fn validate(
    ex: &mut impl Executor,
    project_id: i64,
    given: &BTreeMap<String, Value>,
) -> Result<Vec<(Field, Option<String>)>, StoreError> {
    if given.is_empty() {
        return Ok(Vec::new());
    }
    let defs = list(ex, project_id).await?;
    let mut out = Vec::new();
    for (name, v) in given {
        let key = format!("fields.{name}");
        let bad = |m: String| OuroError::field(&key, m);
        let def = defs
            .iter()
            .find(|d| &d.name == name)
            .ok_or_else(|| bad(format!("{name:?} is not a custom field of this project")))?;
        let text = match v {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => return Err(bad("give a string, a number or null".into()).into()),
        };
        let Some(text) = text else {
            out.push((def.clone(), None));
            continue;
        };
        if text.contains('\0') {
            return Err(bad("must not contain NUL".into()).into());
        }
        match def.field_type {
            FieldType::Text => {
                if text.chars().count() > MAX_TEXT {
                    return Err(bad(format!("at most {MAX_TEXT} characters")).into());
                }
            }
            FieldType::Number => {
                if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(bad(format!("{text:?} is not a number")).into());
                }
            }
            FieldType::Select => {
                if !def.options.contains(&text) {
                    return Err(OuroError::field(
                        &key,
                        format!("{text:?} is not one of the options"),
                    )
                    .with_details(json!({"field": key, "options": def.options}))
                    .into());
                }
            }
            FieldType::User => {
                let found = q("SELECT u.id FROM users u WHERE u.name = $1 AND (u.is_admin = TRUE \
                     OR EXISTS (SELECT 1 FROM members m WHERE m.project_id = $2 AND m.user_id = u.id))")
                .bind(&text)
                .bind(project_id)
                .fetch_optional(ex)
                .await?;
                if found.is_none() {
                    return Err(bad(format!("{text:?} is not a member of this project")).into());
                }
            }
            FieldType::Date => {
                crate::items::parse_time(&key, Some(&text))?;
            }
        }
        out.push((def.clone(), Some(text)));
    }
    Ok(out)
}

/// Writes validated values of one item (None deletes the value).
pub async fn set(
    tx: &mut Tx,
    item_id: i64,
    values: &[(Field, Option<String>)],
) -> Result<(), StoreError> {
    for (f, v) in values {
        q("DELETE FROM plan_field_values WHERE item_id = $1 AND field_id = $2")
            .bind(item_id)
            .bind(f.id)
            .execute(tx)
            .await?;
        if let Some(v) = v {
            q("INSERT INTO plan_field_values (item_id, field_id, value) VALUES ($1, $2, $3)")
                .bind(item_id)
                .bind(f.id)
                .bind(v)
                .execute(tx)
                .await?;
        }
    }
    Ok(())
}

/// The values of many items with one query: (item id, field name, value).
pub async fn values_of(
    ex: &mut impl Executor,
    ids: &[i64],
) -> Result<Vec<(i64, String, String)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Ids are integers from our own table, so inlining them is safe.
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    q(format!(
        "SELECT v.item_id, f.name, v.value FROM plan_field_values v \
         JOIN plan_fields f ON f.id = v.field_id WHERE v.item_id IN ({})",
        list.join(",")
    ))
    // Its text changes with every page: keeping it prepared would only churn the cache.
    .plan_each_run()
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| Ok((r.i64("item_id")?, r.text("name")?, r.text("value")?)))
    .collect()
}
