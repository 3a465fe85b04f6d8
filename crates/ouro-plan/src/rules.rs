//! Automation rules per project: *when* an event of a kind arrives and its conditions hold for
//! an item, *then* run actions on that item (transition, assign, add a label, comment).
//!
//! The `plan-automation` consumer evaluates them on the ledger, acting as `system:automation`.
//! Events that automation itself caused never trigger rules, so two rules cannot ping-pong. Each
//! (rule, event, item) is run at most once and logged in `plan_rule_runs` with its outcome: `ok`,
//! `skipped` (a condition did not hold) or `failed` (e.g. the workflow refused the transition).

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, Event, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Executor, Row, Store, StoreError, Tx, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::items::{self, Item, ItemPatch};

pub const CONSUMER: &str = "plan-automation";
pub const ACTOR: &str = "automation";
pub const MAX_NAME: usize = 100;
pub const MAX_ACTIONS: usize = 10;
pub const MAX_TEXT: usize = 5_000;

/// Which mentioned items an event's rule applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum References {
    /// Every item the event's text mentions (and every item linked to the event's subject).
    #[default]
    Any,
    /// Only items named after a closing keyword: "fixes/closes/resolves DEMO-42".
    Closing,
}

/// When a rule runs. `event` is an event kind (`GET /api/v1/event-kinds`). For `item.*` events
/// the item is the event's own; for other events, the items the payload's text mentions
/// (`title`, `description`, `message`, `commits[].message`) and, unless `references` is
/// `closing`, the items linked to the event's subject. The other conditions must hold for the
/// item at the time the rule runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    pub event: String,
    #[serde(default)]
    pub references: References,
    /// Only items of this type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
    /// Only items currently in this state (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only items with this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One action, written as a one-key object: `{"transition": "Done"}`, `{"assign": "alice"}`,
/// `{"add_label": "shipped"}`, `{"comment": "Merged in !12"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Transition(String),
    Assign(String),
    AddLabel(String),
    Comment(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Rule {
    pub id: i64,
    pub name: String,
    pub enabled: bool,
    pub when: When,
    pub then: Vec<Action>,
    /// Send it back with a change; a stale version gets 409.
    pub version: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// 1 to 100 characters.
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub when: When,
    /// 1 to 10 actions, run in order; the first that fails stops the run.
    pub then: Vec<Action>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub when: Option<When>,
    pub then: Option<Vec<Action>>,
    /// The version you read; if the rule changed since, the change is refused with 409.
    pub version: Option<i64>,
}

/// One evaluation of a rule for one item.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Run {
    pub id: i64,
    pub rule_id: i64,
    pub event_seq: i64,
    pub event_kind: String,
    pub item: String,
    /// `ok`, `skipped` or `failed`.
    pub outcome: String,
    pub message: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub time: i64,
}

/// The rules every project starts with (a maintainer may change or delete them).
pub fn defaults() -> Vec<NewRule> {
    vec![
        NewRule {
            name: "Change request opened: In review".into(),
            enabled: true,
            when: When {
                event: ev::CR_OPENED.name.into(),
                references: References::Any,
                item_type: None,
                state: None,
                label: None,
            },
            then: vec![Action::Transition("In review".into())],
        },
        NewRule {
            name: "Merged with fixes/closes: Done".into(),
            enabled: true,
            when: When {
                event: ev::CR_MERGED.name.into(),
                references: References::Closing,
                item_type: None,
                state: None,
                label: None,
            },
            then: vec![Action::Transition("Done".into())],
        },
    ]
}

fn invalid(field: &str, msg: impl Into<String>) -> OuroError {
    OuroError::field(field, msg)
}

fn not_found(id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::RuleNotFound,
        format!("rule {id} does not exist in this project"),
    )
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), OuroError> {
    if s.trim().is_empty() {
        return Err(invalid(field, format!("{field} must not be empty")));
    }
    if s.contains('\0') {
        return Err(invalid(field, format!("{field} must not contain NUL")));
    }
    if s.chars().count() > max {
        return Err(invalid(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(())
}

fn validate(name: &str, when: &When, then: &[Action]) -> Result<(), OuroError> {
    check_text("name", name, MAX_NAME)?;
    if ev::kind(&when.event).is_none() {
        return Err(invalid(
            "when.event",
            format!(
                "{:?} is not an event kind (GET /api/v1/event-kinds lists them)",
                when.event
            ),
        ));
    }
    for (f, v) in [
        ("when.type", &when.item_type),
        ("when.state", &when.state),
        ("when.label", &when.label),
    ] {
        if let Some(v) = v {
            check_text(f, v, MAX_NAME)?;
        }
    }
    if then.is_empty() || then.len() > MAX_ACTIONS {
        return Err(invalid(
            "then",
            format!("a rule needs 1 to {MAX_ACTIONS} actions"),
        ));
    }
    for (i, a) in then.iter().enumerate() {
        let (text, max) = match a {
            Action::Comment(t) => (t, MAX_TEXT),
            Action::Transition(t) | Action::Assign(t) | Action::AddLabel(t) => (t, MAX_NAME),
        };
        check_text(&format!("then[{i}]"), text, max)?;
    }
    Ok(())
}

fn rule_from(r: &Row) -> Result<Rule, StoreError> {
    let bad = |e: serde_json::Error| StoreError::Decode(format!("stored rule JSON: {e}"));
    Ok(Rule {
        id: r.i64("id")?,
        name: r.text("name")?,
        enabled: r.bool("enabled")?,
        when: serde_json::from_str(&r.text("when_json")?).map_err(bad)?,
        then: serde_json::from_str(&r.text("then_json")?).map_err(bad)?,
        version: r.i64("version")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Inserts a rule; `actor` `None` writes no event (the defaults, which are part of a new
/// project like its default workflow).
async fn insert(
    tx: &mut Tx,
    project: &Project,
    actor: Option<&Actor>,
    rule: &NewRule,
) -> Result<Rule, StoreError> {
    let now = ouro_core::time::now_ms();
    let row = q(
        "INSERT INTO plan_rules (project_id, name, enabled, event_kind, when_json, then_json, \
         version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) RETURNING *",
    )
    .bind(project.id)
    .bind(rule.name.trim())
    .bind(rule.enabled)
    .bind(rule.when.event.as_str())
    .bind(to_json(&rule.when))
    .bind(to_json(&rule.then))
    .bind(now)
    .fetch_one(tx)
    .await?;
    let created = rule_from(&row)?;
    let Some(actor) = actor else {
        return Ok(created);
    };
    tx.append(
        NewEvent::new(
            ev::RULE_CHANGED,
            actor,
            created.id,
            json!({"action": "created", "name": created.name, "when": created.when, "then": created.then}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    Ok(created)
}

async fn seeded(ex: &mut impl Executor, project_id: i64) -> Result<bool, StoreError> {
    Ok(
        q("SELECT project_id FROM plan_rule_seeds WHERE project_id = $1")
            .bind(project_id)
            .fetch_optional(ex)
            .await?
            .is_some(),
    )
}

/// Creates the default rules once per project, without events (like the default workflow).
/// The marker row keeps deleted defaults deleted.
pub async fn ensure_defaults(store: &Store, project: &Project) -> Result<(), StoreError> {
    if seeded(&mut store.read().await?, project.id).await? {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    let inserted = q("INSERT INTO plan_rule_seeds (project_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING project_id")
        .bind(project.id)
        .fetch_optional(&mut tx)
        .await?;
    if inserted.is_none() {
        return Ok(());
    }
    for r in defaults() {
        insert(&mut tx, project, None, &r).await?;
    }
    tx.commit().await
}

/// The project's rules, oldest first (the defaults are created on first use).
pub async fn list(store: &Store, project: &Project) -> Result<Vec<Rule>, StoreError> {
    ensure_defaults(store, project).await?;
    q("SELECT * FROM plan_rules WHERE project_id = $1 ORDER BY id")
        .bind(project.id)
        .fetch_all(&mut store.read().await?)
        .await?
        .iter()
        .map(rule_from)
        .collect()
}

pub async fn get(ex: &mut impl Executor, project_id: i64, id: i64) -> Result<Rule, StoreError> {
    let row = q("SELECT * FROM plan_rules WHERE id = $1 AND project_id = $2")
        .bind(id)
        .bind(project_id)
        .fetch_optional(ex)
        .await?
        .ok_or_else(|| not_found(id))?;
    rule_from(&row)
}

pub async fn create(
    store: &Store,
    project: &Project,
    actor: &Actor,
    rule: NewRule,
) -> Result<Rule, StoreError> {
    validate(&rule.name, &rule.when, &rule.then)?;
    ensure_defaults(store, project).await?;
    let mut tx = store.begin().await?;
    let created = insert(&mut tx, project, Some(actor), &rule).await?;
    tx.commit().await?;
    Ok(created)
}

pub async fn update(
    store: &Store,
    project: &Project,
    actor: &Actor,
    id: i64,
    patch: RulePatch,
) -> Result<Rule, StoreError> {
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project.id, id).await?;
    if let Some(v) = patch.version
        && v != cur.version
    {
        return Err(OuroError::stale_version("rule", cur.version).into());
    }
    let name = patch.name.unwrap_or_else(|| cur.name.clone());
    let when = patch.when.unwrap_or_else(|| cur.when.clone());
    let then = patch.then.unwrap_or_else(|| cur.then.clone());
    let enabled = patch.enabled.unwrap_or(cur.enabled);
    validate(&name, &when, &then)?;
    let row = q("UPDATE plan_rules SET name = $1, enabled = $2, event_kind = $3, when_json = $4, \
         then_json = $5, version = version + 1, updated_at = $6 WHERE id = $7 AND version = $8 RETURNING *")
    .bind(name.trim())
    .bind(enabled)
    .bind(when.event.as_str())
    .bind(to_json(&when))
    .bind(to_json(&then))
    .bind(ouro_core::time::now_ms())
    .bind(id)
    .bind(cur.version)
    .fetch_optional(&mut tx)
    .await?
    .ok_or_else(|| OuroError::stale_version("rule", cur.version + 1))?;
    let rule = rule_from(&row)?;
    let action = match (cur.enabled, rule.enabled) {
        (true, false) => "disabled",
        (false, true) => "enabled",
        _ => "updated",
    };
    tx.append(
        NewEvent::new(
            ev::RULE_CHANGED,
            actor,
            id,
            json!({"action": action, "name": rule.name, "when": rule.when, "then": rule.then}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(rule)
}

pub async fn delete(
    store: &Store,
    project: &Project,
    actor: &Actor,
    id: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project.id, id).await?;
    q("DELETE FROM plan_rules WHERE id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(
            ev::RULE_CHANGED,
            actor,
            id,
            json!({"action": "deleted", "name": cur.name}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await
}

/// The newest runs of a rule first.
pub async fn runs(
    ex: &mut impl Executor,
    project_id: i64,
    rule_id: i64,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    get(ex, project_id, rule_id).await?;
    q("SELECT * FROM plan_rule_runs WHERE rule_id = $1 ORDER BY id DESC LIMIT $2")
        .bind(rule_id)
        .bind(limit.clamp(1, 500))
        .fetch_all(ex)
        .await?
        .iter()
        .map(|r| {
            Ok(Run {
                id: r.i64("id")?,
                rule_id: r.i64("rule_id")?,
                event_seq: r.i64("event_seq")?,
                event_kind: r.text("event_kind")?,
                item: r.text("item_key")?,
                outcome: r.text("outcome")?,
                message: r.text("message")?,
                time: r.i64("created_at")?,
            })
        })
        .collect()
}

/// The ledger consumer that runs rules.
pub struct Automation;

impl ouro_store::consumers::Consumer for Automation {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move { evaluate(store, event).await.map_err(OuroError::from) })
    }
}

/// The text of an event's payload that may mention items.
fn event_text(e: &Event) -> String {
    let p = &e.payload;
    let mut text = String::new();
    for f in ["title", "description", "message"] {
        if let Some(s) = p.get(f).and_then(|v| v.as_str()) {
            text.push_str(s);
            text.push('\n');
        }
    }
    for c in p
        .get("commits")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(s) = c.get("message").and_then(|v| v.as_str()) {
            text.push_str(s);
            text.push('\n');
        }
    }
    text
}

/// (item key, named after a closing keyword) for each item the event is about.
async fn targets(
    store: &Store,
    project: &Project,
    e: &Event,
) -> Result<Vec<(String, bool)>, StoreError> {
    if e.kind.starts_with("item.") || e.subject.kind == "item" {
        return Ok(e
            .payload
            .get("key")
            .and_then(|k| k.as_str())
            .map(|k| vec![(k.to_string(), false)])
            .unwrap_or_default());
    }
    let prefix = items::key_prefix(&project.slug);
    let mut out: Vec<(String, bool)> = Vec::new();
    for r in ouro_core::refs::parse(&event_text(e)) {
        if r.project_key != prefix {
            continue;
        }
        match out.iter_mut().find(|(k, _)| *k == r.key) {
            Some(t) => t.1 |= r.action.is_some(),
            None => out.push((r.key, r.action.is_some())),
        }
    }
    // The subject's own links, and (because the references consumer may not have linked this
    // event's subject yet) the links of what it was built from: a deployment's release, a
    // release's commits, a pipeline's commit.
    let mut subjects = vec![(e.subject.kind.clone(), e.subject.id.clone())];
    if let Some((_, upstream)) = crate::links::chain(e) {
        subjects.extend(upstream.into_iter().map(|(t, id)| (t.to_string(), id)));
    }
    let mut linked = Vec::new();
    let mut c = store.read().await?;
    for (t, id) in &subjects {
        linked.extend(crate::links::items_linked_to(&mut c, project.id, t, id).await?);
    }
    for k in linked {
        if !out.iter().any(|(o, _)| *o == k) {
            out.push((k, false));
        }
    }
    Ok(out)
}

async fn evaluate(store: &Store, e: &Event) -> Result<(), StoreError> {
    if e.actor == Actor::System(ACTOR).label() || ev::kind(&e.kind).is_none() {
        return Ok(());
    }
    let Some(slug) = e.project.as_deref() else {
        return Ok(());
    };
    let Some(project) = ouro_store::projects::by_slug(&mut store.read().await?, slug).await? else {
        return Ok(());
    };
    if e.kind == ev::PROJECT_CREATED.name {
        return ensure_defaults(store, &project).await;
    }
    let rules: Vec<Rule> = {
        let mut c = store.read().await?;
        if !seeded(&mut c, project.id).await? {
            drop(c);
            ensure_defaults(store, &project).await?;
            c = store.read().await?;
        }
        q("SELECT * FROM plan_rules WHERE project_id = $1 AND event_kind = $2 AND enabled = TRUE ORDER BY id")
            .bind(project.id)
            .bind(e.kind.as_str())
            .fetch_all(&mut c)
            .await?
            .iter()
            .map(rule_from)
            .collect::<Result<_, _>>()?
    };
    if rules.is_empty() {
        return Ok(());
    }
    let targets = targets(store, &project, e).await?;
    for rule in &rules {
        for (key, closing) in &targets {
            let done = q("SELECT id FROM plan_rule_runs WHERE rule_id = $1 AND event_seq = $2 AND item_key = $3")
                .bind(rule.id)
                .bind(e.seq)
                .bind(key.as_str())
                .fetch_optional(&mut store.read().await?)
                .await?;
            if done.is_some() {
                continue; // a redelivered event
            }
            let (outcome, message) = run_rule(store, &project, rule, key, *closing).await?;
            let mut tx = store.begin().await?;
            q("INSERT INTO plan_rule_runs (rule_id, event_seq, event_kind, item_key, outcome, message, created_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(rule.id)
            .bind(e.seq)
            .bind(e.kind.as_str())
            .bind(key.as_str())
            .bind(outcome)
            .bind(message)
            .bind(ouro_core::time::now_ms())
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Checks the conditions, then runs the actions. `Err` only for storage failures (retried);
/// domain refusals become a `failed` run.
async fn run_rule(
    store: &Store,
    project: &Project,
    rule: &Rule,
    key: &str,
    closing: bool,
) -> Result<(&'static str, String), StoreError> {
    if rule.when.references == References::Closing && !closing {
        return Ok((
            "skipped",
            format!("{key} is mentioned without fixes/closes/resolves"),
        ));
    }
    let Some(item) = items::get(&mut store.read().await?, project.id, key).await? else {
        return Ok(("skipped", format!("{key} does not exist")));
    };
    if let Some(why) = unmet(&rule.when, &item) {
        return Ok(("skipped", why));
    }
    let actor = Actor::System(ACTOR);
    let mut done = Vec::new();
    for a in &rule.then {
        let r = match a {
            Action::Transition(to) => {
                let cur = items::get(&mut store.read().await?, project.id, key).await?;
                if cur.is_some_and(|c| c.state.eq_ignore_ascii_case(to)) {
                    done.push(format!("already in {to}"));
                    continue;
                }
                items::transition(store, project, &actor, key, to, None)
                    .await
                    .map(|i| format!("moved to {}", i.state))
            }
            Action::Assign(user) => items::update(
                store,
                project,
                &actor,
                key,
                ItemPatch {
                    assignee: Some(Some(user.clone())),
                    ..ItemPatch::default()
                },
            )
            .await
            .map(|_| format!("assigned to {user}")),
            Action::AddLabel(label) => {
                let cur = items::get(&mut store.read().await?, project.id, key).await?;
                let mut labels = cur.map(|c| c.labels).unwrap_or_default();
                if labels.iter().any(|l| l == label) {
                    done.push(format!("already labelled {label}"));
                    continue;
                }
                labels.push(label.clone());
                items::update(
                    store,
                    project,
                    &actor,
                    key,
                    ItemPatch {
                        labels: Some(labels),
                        ..ItemPatch::default()
                    },
                )
                .await
                .map(|_| format!("labelled {label}"))
            }
            Action::Comment(body) => items::add_comment(store, project, &actor, key, body)
                .await
                .map(|_| "commented".to_string()),
        };
        match r {
            Ok(m) => done.push(m),
            Err(StoreError::Domain(e)) => {
                done.push(e.message.clone());
                return Ok(("failed", done.join("; ")));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(("ok", done.join("; ")))
}

/// Why the item does not meet the rule's conditions, or `None` when it does.
fn unmet(when: &When, item: &Item) -> Option<String> {
    if let Some(t) = &when.item_type
        && !item.item_type.eq_ignore_ascii_case(t)
    {
        return Some(format!("{} is a {}, not a {t}", item.key, item.item_type));
    }
    if let Some(s) = &when.state
        && !item.state.eq_ignore_ascii_case(s)
    {
        return Some(format!("{} is in {}, not {s}", item.key, item.state));
    }
    if let Some(l) = &when.label
        && !item.labels.iter().any(|x| x.eq_ignore_ascii_case(l))
    {
        return Some(format!("{} has no label {l}", item.key));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_one_key_objects() {
        let a: Vec<Action> =
            serde_json::from_str(r#"[{"transition":"Done"},{"add_label":"x"}]"#).unwrap();
        assert_eq!(
            a,
            vec![
                Action::Transition("Done".into()),
                Action::AddLabel("x".into())
            ]
        );
        assert!(serde_json::from_str::<Action>(r#"{"explode":"x"}"#).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let when = When {
            event: "no.such".into(),
            references: References::Any,
            item_type: None,
            state: None,
            label: None,
        };
        let e = validate("r", &when, &[Action::Comment("hi".into())]).unwrap_err();
        assert_eq!(e.details.as_ref().unwrap()["field"], "when.event");
        let when = When {
            event: "cr.opened".into(),
            ..when
        };
        let e = validate("r", &when, &[]).unwrap_err();
        assert_eq!(e.details.as_ref().unwrap()["field"], "then");
        validate("r", &when, &[Action::Comment("hi".into())]).unwrap();
    }
}
