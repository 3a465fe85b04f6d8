//! The event ledger's vocabulary. Every state change appends one [`NewEvent`] in the same
//! transaction as the change. The table of kinds below covers all eight phases: a phase fills
//! in its kinds when it is built, but the names and their meaning are fixed here so consumers
//! (webhooks, insights, other phases) can be written against them.

use serde::Serialize;
use serde_json::Value;

/// The phase of the loop an event kind belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Identity, projects, webhooks: the ground the phases stand on.
    Platform,
    Plan,
    Code,
    Build,
    Test,
    Release,
    Deploy,
    Operate,
    Monitor,
}

/// One kind of event: a stable dotted name, the phase that emits it, and the version of its
/// payload schema (bumped when a payload changes incompatibly; consumers check it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EventKind {
    pub name: &'static str,
    pub phase: Phase,
    pub schema_version: u32,
    pub subject: &'static str,
    pub description: &'static str,
}

macro_rules! kinds {
    ($( $ident:ident = ($name:literal, $phase:ident, $ver:literal, $subject:literal, $desc:literal), )*) => {
        $( pub const $ident: EventKind = EventKind {
            name: $name, phase: Phase::$phase, schema_version: $ver, subject: $subject, description: $desc,
        }; )*
        /// Every event kind, grouped by phase. `docs/events.md` is generated from this table.
        pub const KINDS: &[EventKind] = &[ $( $ident, )* ];
    };
}

kinds! {
    // Platform
    USER_CREATED = ("user.created", Platform, 1, "user", "A user account was created (setup, admin page, API or CLI)."),
    USER_UPDATED = ("user.updated", Platform, 1, "user", "A user's admin flag, password or status changed."),
    USER_SIGNED_IN = ("user.signed_in", Platform, 1, "user", "A user signed in to the web UI (audit)."),
    USER_SIGN_IN_FAILED = ("user.sign_in_failed", Platform, 1, "user", "A sign-in attempt failed (audit); payload has the reason and address."),
    USER_SIGNED_OUT = ("user.signed_out", Platform, 1, "user", "A user signed out."),
    TOKEN_CREATED = ("token.created", Platform, 1, "token", "A personal API token was created (audit; never the secret)."),
    TOKEN_REVOKED = ("token.revoked", Platform, 1, "token", "A personal API token was revoked."),
    PROJECT_CREATED = ("project.created", Platform, 1, "project", "A project was created."),
    PROJECT_UPDATED = ("project.updated", Platform, 1, "project", "A project's name, description or visibility changed; payload lists the changes."),
    PROJECT_DELETED = ("project.deleted", Platform, 1, "project", "A project was deleted."),
    MEMBER_ADDED = ("member.added", Platform, 1, "user", "A user became a member of a project."),
    MEMBER_ROLE_CHANGED = ("member.role_changed", Platform, 1, "user", "A member's role changed (audit)."),
    MEMBER_REMOVED = ("member.removed", Platform, 1, "user", "A member was removed from a project."),
    WEBHOOK_CREATED = ("webhook.created", Platform, 1, "webhook", "An outgoing webhook was created."),
    WEBHOOK_UPDATED = ("webhook.updated", Platform, 1, "webhook", "An outgoing webhook was changed."),
    WEBHOOK_DELETED = ("webhook.deleted", Platform, 1, "webhook", "An outgoing webhook was deleted."),
    // Plan
    ITEM_CREATED = ("item.created", Plan, 1, "item", "A work item (epic, feature, story, task, bug, incident, feedback) was created."),
    ITEM_UPDATED = ("item.updated", Plan, 1, "item", "A work item's fields changed; payload lists old and new values."),
    ITEM_TRANSITIONED = ("item.transitioned", Plan, 1, "item", "A work item moved to another workflow state."),
    ITEM_COMMENTED = ("item.commented", Plan, 1, "item", "A comment was added to a work item."),
    ITEM_LINKED = ("item.linked", Plan, 1, "item", "A work item was linked to another item or to a ledger subject."),
    ITEM_DELETED = ("item.deleted", Plan, 1, "item", "A work item was deleted; its key is never reused."),
    ITEM_ATTACHED = ("item.attached", Plan, 1, "item", "A file was attached to a work item, or removed (payload `removed: true`)."),
    ITEM_TRIAGED = ("item.triaged", Plan, 1, "item", "A feedback or incident report was triaged: accepted, merged into another item, or declined."),
    ITEMS_IMPORTED = ("items.imported", Plan, 1, "project", "A CSV import created items (one `item.created` each, plus this summary)."),
    PLAN_CONFIG_CHANGED = ("plan.config_changed", Plan, 1, "project", "A project's item types, workflow states, transitions, custom fields or board settings changed; payload says what."),
    RULE_CHANGED = ("rule.changed", Plan, 1, "rule", "An automation rule was created, changed, enabled, disabled or deleted."),
    SPRINT_CREATED = ("sprint.created", Plan, 1, "sprint", "A sprint was created."),
    SPRINT_UPDATED = ("sprint.updated", Plan, 1, "sprint", "A sprint's name, dates, goal or capacity changed."),
    SPRINT_STARTED = ("sprint.started", Plan, 1, "sprint", "A sprint started."),
    SPRINT_COMPLETED = ("sprint.completed", Plan, 1, "sprint", "A sprint was completed."),
    // Code
    REPO_CREATED = ("repo.created", Code, 1, "repo", "A git repository was created, imported or mirrored."),
    REPO_DELETED = ("repo.deleted", Code, 1, "repo", "A git repository was deleted with its history."),
    CODE_PUSHED = ("code.pushed", Code, 1, "repo", "A push was accepted: ref, old and new ids, new commits."),
    CODE_PUSH_REJECTED = ("code.push_rejected", Code, 1, "repo", "A push was refused by protection, secret scanning or limits."),
    REPO_PUSH_RULES_CHANGED = ("repo.push_rules_changed", Code, 1, "repo", "A repository's protected branches, secret scanning rules or push limits changed."),
    CR_OPENED = ("cr.opened", Code, 1, "change_request", "A change request was opened."),
    CR_UPDATED = ("cr.updated", Code, 1, "change_request", "A change request's source branch or fields changed."),
    CR_REVIEWED = ("cr.reviewed", Code, 1, "change_request", "A review was submitted (approve or request changes)."),
    CR_MERGED = ("cr.merged", Code, 1, "change_request", "A change request was merged through the merge gate."),
    CR_CLOSED = ("cr.closed", Code, 1, "change_request", "A change request was closed without merging."),
    CR_MERGE_REFUSED = ("cr.merge_refused", Code, 1, "change_request", "A merge was refused by the gate; payload lists the unmet conditions (the author is notified)."),
    CODE_STATUS = ("code.status", Code, 1, "repo", "A status (pending, success, failure, error) was posted for a commit: payload has sha, name, state."),
    REPO_SETTINGS_CHANGED = ("repo.settings_changed", Code, 1, "repo", "A repository's merge rules or other settings changed; payload says what."),
    CR_COMMENTED = ("cr.commented", Code, 1, "change_request", "A comment was added to a change request: payload has comment_id, thread_id, reply, anchor (path, side, line, commit; null for a comment on the whole change request), body, participants."),
    CR_COMMENT_CHANGED = ("cr.comment_changed", Code, 1, "change_request", "A comment on a change request was edited or deleted: payload has action (edited | deleted), comment_id, thread_id."),
    CR_THREAD_RESOLVED = ("cr.thread_resolved", Code, 1, "change_request", "A comment thread was resolved or unresolved: payload has thread_id and resolved (true | false)."),
    CR_REVIEW_REQUESTED = ("cr.review_requested", Code, 1, "change_request", "A reviewer was requested on a change request (payload `reviewer`); they are notified."),
    // Build
    PIPELINE_QUEUED = ("pipeline.queued", Build, 1, "pipeline_run", "A pipeline run was created for a trigger."),
    PIPELINE_STARTED = ("pipeline.started", Build, 1, "pipeline_run", "The first job of a pipeline run started."),
    PIPELINE_FINISHED = ("pipeline.finished", Build, 1, "pipeline_run", "A pipeline run finished: success, failure or cancelled."),
    JOB_STARTED = ("job.started", Build, 1, "job", "A job was leased by a runner and started."),
    JOB_FINISHED = ("job.finished", Build, 1, "job", "A job finished."),
    ARTIFACT_STORED = ("artifact.stored", Build, 1, "artifact", "A job uploaded an artifact (content hash in payload)."),
    ARTIFACTS_UPLOADED = ("build.artifacts_uploaded", Build, 1, "job", "A job's artifacts were stored: payload has run, job, count, bytes, paths."),
    CACHE_SAVED = ("build.cache_saved", Build, 1, "project", "A job saved a cache: payload has key, sha256, size, evicted (keys removed to stay within the quota)."),
    ARTIFACTS_EXPIRED = ("build.artifacts_expired", Build, 1, "project", "Expired artifacts were deleted by the garbage collector: payload has count, bytes."),
    VARIABLE_CHANGED = ("build.variable_changed", Build, 1, "variable", "A pipeline variable was set or deleted (name, environment, action, actor)."),
    SECRET_CHANGED = ("build.secret_changed", Build, 1, "secret", "A pipeline secret was set or deleted (name, environment, action, actor; never the value)."),
    JOB_REQUEUED = ("job.requeued", Build, 1, "job", "A job attempt failed or lost its runner and the job was queued again by its retry policy: payload has attempt and reason."),
    RUNNER_REGISTERED = ("runner.registered", Build, 1, "runner", "A runner registered with a registration token: payload has name and labels."),
    RUNNER_DRAINED = ("runner.drained", Build, 1, "runner", "An admin drained a runner (or resumed it): payload has draining."),
    // Test
    TEST_REPORT_INGESTED = ("test.report_ingested", Test, 1, "pipeline_run", "Test reports of a job were parsed: totals in payload."),
    TEST_FLAKY_DETECTED = ("test.flaky_detected", Test, 1, "test_case", "A test was found flaky."),
    QUALITY_GATE_EVALUATED = ("quality_gate.evaluated", Test, 1, "pipeline_run", "A quality gate passed or failed."),
    TEST_QUARANTINED = ("test.quarantined", Test, 1, "test_case", "A maintainer quarantined a test (reason, expires_at) or ended its quarantine (action)."),
    // Release
    RELEASE_CREATED = ("release.created", Release, 1, "release", "A draft release was created."),
    RELEASE_PUBLISHED = ("release.published", Release, 1, "release", "A release was published and became immutable."),
    RELEASE_WITHDRAWN = ("release.withdrawn", Release, 1, "release", "A published release was withdrawn."),
    APPROVAL_REQUESTED = ("approval.requested", Release, 1, "release", "A promotion needs an approval."),
    APPROVAL_DECIDED = ("approval.decided", Release, 1, "release", "An approval was granted or refused."),
    RELEASE_NOTES_EDITED = ("release.notes_edited", Release, 1, "release", "A draft release's notes were edited."),
    RELEASE_BUNDLED = ("release.bundled", Release, 1, "release", "A release's bundle was built and signed: sha256 and size in payload."),
    PROMOTION_REQUESTED = ("promotion.requested", Release, 1, "promotion", "A promotion of a release to an environment was requested."),
    PROMOTION_APPROVED = ("promotion.approved", Release, 1, "promotion", "Every gate of a promotion passed: it is handed to Deploy."),
    PROMOTION_REJECTED = ("promotion.rejected", Release, 1, "promotion", "A promotion was rejected (by an approver, or a gate that cannot pass)."),
    RELEASE_SETTINGS_CHANGED = ("release.settings_changed", Release, 1, "project", "A project's release settings (0.x version rules, first version, notes template) changed; payload lists the changes."),
    ENVIRONMENTS_UPDATED = ("release.environments_updated", Release, 1, "project", "The promotion path kept in the project settings (used when a release's commit has no .ouro/environments.yml) was changed."),
    // Deploy
    DEPLOYMENT_STARTED = ("deploy.started", Deploy, 1, "deployment", "A deployment to an environment started."),
    DEPLOYMENT_STEP = ("deploy.step", Deploy, 1, "deployment", "A step of a deployment finished (started a version, ready, switched traffic, a canary step with its numbers, drained, stopped)."),
    DEPLOYMENT_SUCCEEDED = ("deploy.succeeded", Deploy, 1, "deployment", "A deployment finished and took traffic."),
    DEPLOYMENT_FAILED = ("deploy.failed", Deploy, 1, "deployment", "A deployment failed."),
    DEPLOYMENT_ROLLED_BACK = ("deploy.rolled_back", Deploy, 1, "deployment", "Traffic was moved back to the previous version."),
    FLAG_CHANGED = ("flag.changed", Deploy, 1, "feature_flag", "A feature flag's state or strategy changed."),
    // Operate
    HEALTH_CHANGED = ("health.changed", Operate, 1, "instance", "A health check changed state (healthy, unhealthy)."),
    INSTANCE_RESTARTED = ("instance.restarted", Operate, 1, "instance", "Self-healing restarted an instance."),
    SCALE_CHANGED = ("scale.changed", Operate, 1, "service", "The autoscaler changed the number of instances."),
    INCIDENT_OPENED = ("incident.opened", Operate, 1, "incident", "An incident was opened, by a person or an alert."),
    INCIDENT_RESOLVED = ("incident.resolved", Operate, 1, "incident", "An incident was resolved."),
    // Monitor
    ALERT_FIRED = ("alert.fired", Monitor, 1, "alert", "An alert rule started firing."),
    ALERT_RESOLVED = ("alert.resolved", Monitor, 1, "alert", "An alert rule stopped firing."),
    FEEDBACK_RECEIVED = ("feedback.received", Monitor, 1, "feedback", "Feedback from users or production arrived; Plan turns it into an item."),
}

/// The table of kinds in `docs/events.md` (a test keeps the file in step with this table).
pub fn markdown_table() -> String {
    let mut out =
        String::from("| kind | phase | schema | subject | meaning |\n|---|---|---|---|---|\n");
    for k in KINDS {
        let phase = serde_json::to_value(k.phase)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            k.name, phase, k.schema_version, k.subject, k.description
        ));
    }
    out
}

/// Looks up a kind by its dotted name.
pub fn kind(name: &str) -> Option<&'static EventKind> {
    KINDS.iter().find(|k| k.name == name)
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User {
        id: i64,
        name: String,
    },
    /// A part of Ouro acting on its own (a scheduler, the webhook sender, a CLI command).
    System(&'static str),
    /// Nobody signed in (a failed sign-in, a setup link).
    Anonymous,
}

impl Actor {
    /// The text stored in the ledger: `user:alice`, `system:cli`, `anonymous`.
    pub fn label(&self) -> String {
        match self {
            Actor::User { name, .. } => format!("user:{name}"),
            Actor::System(c) => format!("system:{c}"),
            Actor::Anonymous => "anonymous".into(),
        }
    }

    pub fn user_id(&self) -> Option<i64> {
        match self {
            Actor::User { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// What an event is about: a type (`project`, `item`, ...) and its id as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Subject {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// An event to append. The store assigns `seq` and time.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub project: Option<(i64, String)>,
    pub actor: Actor,
    pub subject_id: String,
    pub payload: Value,
}

impl NewEvent {
    pub fn new(kind: EventKind, actor: &Actor, subject_id: impl ToString, payload: Value) -> Self {
        Self {
            kind,
            project: None,
            actor: actor.clone(),
            subject_id: subject_id.to_string(),
            payload,
        }
    }

    /// Scopes the event to a project (id, slug): visibility and webhooks follow the project.
    pub fn in_project(mut self, id: i64, slug: &str) -> Self {
        self.project = Some((id, slug.to_string()));
        self
    }
}

/// An event as stored in the ledger and served by the API, SSE and webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Event {
    pub seq: i64,
    #[serde(with = "crate::time::serde_ms")]
    #[schemars(with = "String")]
    pub time: i64,
    pub project: Option<String>,
    #[serde(skip)]
    pub project_id: Option<i64>,
    pub actor: String,
    pub kind: String,
    pub schema_version: u32,
    pub subject: Subject,
    pub payload: Value,
}

/// Matches a kind against a subscription pattern: `*` (all), `project.*` (a prefix), or an exact name.
pub fn kind_matches(pattern: &str, kind: &str) -> bool {
    let pattern = pattern.trim();
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => kind
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_cover_every_phase() {
        let mut names: Vec<_> = KINDS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        for phase in [
            Phase::Platform,
            Phase::Plan,
            Phase::Code,
            Phase::Build,
            Phase::Test,
            Phase::Release,
            Phase::Deploy,
            Phase::Operate,
            Phase::Monitor,
        ] {
            assert!(
                KINDS.iter().any(|k| k.phase == phase),
                "{phase:?} has no kinds"
            );
        }
    }

    #[test]
    fn patterns() {
        assert!(kind_matches("*", "project.created"));
        assert!(kind_matches("project.*", "project.created"));
        assert!(!kind_matches("project.*", "projects.created"));
        assert!(kind_matches("project.created", "project.created"));
        assert!(!kind_matches("project.created", "project.updated"));
    }
}
