//! The trail of an item: where its change is in the loop. The stages are the ledger subjects
//! linked to the item (by the `plan-references` consumer, see [`crate::links`]), in loop order,
//! each with the status its newest event gives it. Nothing here reads another phase's tables:
//! links name subjects, and statuses come from the ledger.

use ouro_core::Event;
use ouro_store::{Executor, StoreError};
use schemars::JsonSchema;
use serde::Serialize;

use crate::links::{self, SubjectLink};

/// The stages in loop order: (subject type, heading).
pub const STAGES: [(&str, &str); 6] = [
    ("commit", "Commits"),
    ("change_request", "Change requests"),
    ("pipeline_run", "Pipelines"),
    ("release", "Releases"),
    ("deployment", "Deployments"),
    ("incident", "Incidents"),
];

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Trail {
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Stage {
    /// The ledger subject type: `commit`, `change_request`, `pipeline_run`, `release`,
    /// `deployment`, `incident`, or another type a later phase links.
    #[serde(rename = "type")]
    pub subject_type: String,
    pub title: String,
    /// Oldest first; for deployments, sorted by environment then time.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Entry {
    pub id: String,
    pub title: String,
    pub url: Option<String>,
    /// From the subject's newest event: `pushed`, `open`, `merged`, `closed`, `queued`,
    /// `running`, `success`, `failure`, `draft`, `published`, `deploying`, `succeeded`,
    /// `failed`, `rolled back`, `resolved`, ...
    pub status: String,
    /// Deployments: the environment from the event payload.
    pub environment: Option<String>,
    /// The newest event's time, or when the link was made if the subject has no events.
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub time: i64,
}

/// The status a subject's newest event gives it.
pub fn status_of(subject_type: &str, newest: Option<&Event>) -> String {
    let Some(e) = newest else {
        return match subject_type {
            "commit" => "pushed".into(),
            _ => "linked".into(),
        };
    };
    let from_payload = |field: &str| {
        e.payload
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    match e.kind.as_str() {
        "cr.opened" | "cr.updated" => "open".into(),
        "cr.reviewed" => from_payload("verdict").unwrap_or_else(|| "reviewed".into()),
        "cr.merged" => "merged".into(),
        "cr.closed" => "closed".into(),
        "pipeline.queued" => "queued".into(),
        "pipeline.started" => "running".into(),
        "pipeline.finished" => from_payload("status").unwrap_or_else(|| "finished".into()),
        "release.created" => "draft".into(),
        "release.published" => "published".into(),
        "release.withdrawn" => "withdrawn".into(),
        // A running deployment's newest event is one of its steps.
        "deploy.started" | "deploy.step" => "deploying".into(),
        "deploy.succeeded" => "succeeded".into(),
        "deploy.failed" => "failed".into(),
        "deploy.rolled_back" => "rolled back".into(),
        "incident.opened" => "open".into(),
        "incident.resolved" => "resolved".into(),
        other => other.rsplit('.').next().unwrap_or(other).replace('_', " "),
    }
}

/// The environment named by a deployment's events (`events` oldest first; the newest wins).
fn environment(events: &[Event]) -> Option<String> {
    events.iter().rev().find_map(|e| {
        e.payload
            .get("environment")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    })
}

/// The trail of item `item_id`. Every known stage is present (empty ones say "none yet" in the
/// UI); subject types outside [`STAGES`] follow at the end.
pub async fn of_item(ex: &mut impl Executor, item_id: i64) -> Result<Trail, StoreError> {
    let subjects: Vec<SubjectLink> = links::list_subjects(ex, item_id).await?;
    let mut stages: Vec<Stage> = STAGES
        .iter()
        .map(|(t, title)| Stage {
            subject_type: (*t).into(),
            title: (*title).into(),
            entries: vec![],
        })
        .collect();
    for s in subjects {
        let events =
            ouro_store::events::for_subject(ex, &s.subject_type, &s.subject_id, 20).await?;
        let newest = events.last();
        let entry = Entry {
            id: s.subject_id.clone(),
            title: s.title.clone(),
            url: s.url.clone(),
            status: status_of(&s.subject_type, newest),
            environment: if s.subject_type == "deployment" {
                environment(&events)
            } else {
                None
            },
            time: newest.map(|e| e.time).unwrap_or(s.created_at),
        };
        match stages
            .iter_mut()
            .find(|st| st.subject_type == s.subject_type)
        {
            Some(st) => st.entries.push(entry),
            None => stages.push(Stage {
                subject_type: s.subject_type.clone(),
                title: s.subject_type.replace('_', " "),
                entries: vec![entry],
            }),
        }
    }
    for st in &mut stages {
        if st.subject_type == "deployment" {
            st.entries
                .sort_by(|a, b| a.environment.cmp(&b.environment).then(a.time.cmp(&b.time)));
        }
    }
    Ok(Trail { stages })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Event {
        Event {
            seq: 1,
            time: 0,
            project: None,
            project_id: None,
            actor: "system:deploy".into(),
            kind: kind.into(),
            schema_version: 1,
            subject: ouro_core::events::Subject {
                kind: "deployment".into(),
                id: "1".into(),
            },
            payload: serde_json::json!({}),
        }
    }

    #[test]
    fn a_deployment_is_deploying_until_it_ends() {
        for (kind, status) in [
            ("deploy.started", "deploying"),
            ("deploy.step", "deploying"),
            ("deploy.succeeded", "succeeded"),
            ("deploy.failed", "failed"),
            ("deploy.rolled_back", "rolled back"),
        ] {
            assert_eq!(
                status_of("deployment", Some(&event(kind))),
                status,
                "{kind}"
            );
        }
    }
}
