//! The one table of stable error codes. Each code maps to exactly one HTTP status; the server turns
//! an [`OuroError`] into `{"error":{"code","message","details"}}`. Codes are part of the public API:
//! add new ones, never rename or reuse one.

use serde_json::Value;

macro_rules! error_codes {
    ($( #[doc = $doc:literal] $variant:ident = ($code:literal, $status:literal), )*) => {
        /// A stable error code. See `docs/errors.md` for the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $( #[doc = $doc] $variant, )* }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The dotted code string clients match on, e.g. `project.not_found`.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// The HTTP status this code is always sent with.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            /// What the code means, for the documentation table.
            pub fn description(self) -> &'static str {
                match self { $( ErrorCode::$variant => $doc.trim(), )* }
            }
        }
    };
}

error_codes! {
    /// The request body is not valid JSON.
    MalformedJson = ("request.malformed_json", 400),
    /// The body is JSON but has wrong types, missing or unknown fields.
    InvalidBody = ("request.invalid_body", 422),
    /// The body is larger than the configured limit.
    BodyTooLarge = ("request.body_too_large", 413),
    /// The body is not `application/json` where JSON is required.
    UnsupportedMediaType = ("request.unsupported_media_type", 415),
    /// A path segment is not valid UTF-8 or not a valid parameter.
    InvalidPath = ("request.invalid_path", 400),
    /// A query string parameter is invalid.
    InvalidQuery = ("request.invalid_query", 400),
    /// A field failed validation; `details.field` names it.
    ValidationFailed = ("request.validation_failed", 422),
    /// No route matches the path.
    RouteNotFound = ("route.not_found", 404),
    /// The route exists but not for this method.
    MethodNotAllowed = ("route.method_not_allowed", 405),
    /// No credentials were sent, or they are not valid (unknown, expired or revoked token).
    AuthRequired = ("auth.required", 401),
    /// The user name or password is wrong.
    InvalidCredentials = ("auth.invalid_credentials", 401),
    /// Too many failed sign-ins for this account or address; retry later.
    Throttled = ("auth.throttled", 429),
    /// The caller is known but its role is too small for this action.
    Forbidden = ("auth.forbidden", 403),
    /// The token's scope does not allow this action.
    InsufficientScope = ("auth.insufficient_scope", 403),
    /// A state-changing form was posted without a valid CSRF token.
    CsrfFailed = ("auth.csrf_failed", 403),
    /// The setup link is unknown or was already used.
    SetupInvalid = ("auth.setup_invalid", 404),
    /// The project does not exist or is not visible to the caller.
    ProjectNotFound = ("project.not_found", 404),
    /// Another project already has this slug.
    SlugTaken = ("project.slug_taken", 409),
    /// The slug does not follow the naming rules.
    InvalidSlug = ("project.invalid_slug", 422),
    /// The user does not exist.
    UserNotFound = ("user.not_found", 404),
    /// Another user already has this name.
    UserNameTaken = ("user.name_taken", 409),
    /// The user name does not follow the naming rules.
    InvalidUserName = ("user.invalid_name", 422),
    /// The password is too short or too long.
    InvalidPassword = ("user.invalid_password", 422),
    /// The user is not a member of the project.
    MemberNotFound = ("member.not_found", 404),
    /// The change would leave the project without an owner.
    LastOwner = ("member.last_owner", 409),
    /// The token does not exist or is not the caller's.
    TokenNotFound = ("token.not_found", 404),
    /// The webhook does not exist.
    WebhookNotFound = ("webhook.not_found", 404),
    /// The delivery does not exist.
    DeliveryNotFound = ("webhook.delivery_not_found", 404),
    /// The record changed since the caller read it; `details.current_version` has the version now.
    StaleVersion = ("conflict.stale_version", 409),
    /// The store is not reachable or not migrated.
    Unavailable = ("service.unavailable", 503),
    /// A bug or an unexpected failure; the message never carries internals.
    Internal = ("internal", 500),
    /// The work item does not exist in this project.
    ItemNotFound = ("item.not_found", 404),
    /// The workflow does not allow this move; `details.allowed` lists the states it allows.
    InvalidTransition = ("item.invalid_transition", 422),
    /// The item query (`q`) does not parse; `details` has `position`, `expected`, `found`, `reason` (e.g. `query.unknown_field`) and `caret`, the query with a `^` under the error.
    InvalidItemQuery = ("item.invalid_query", 400),
    /// The saved query does not exist in this project, or it is someone else's personal one.
    SavedQueryNotFound = ("saved_query.not_found", 404),
    /// A saved query with this name already exists (among yours, or among the project's shared ones).
    SavedQueryNameTaken = ("saved_query.name_taken", 409),
    /// The two items are already linked this way.
    LinkExists = ("item.link_exists", 409),
    /// The link does not exist on this item.
    LinkNotFound = ("item.link_not_found", 404),
    /// The automation rule does not exist in this project.
    RuleNotFound = ("rule.not_found", 404),
    /// The notification does not exist, or it is someone else's.
    NotificationNotFound = ("notification.not_found", 404),
    /// The item is not waiting for triage (not feedback or an incident, not in a to-do state, or already triaged).
    TriageNotPending = ("triage.not_pending", 409),
    /// Too many feedback submissions from this address; wait `details.retry_after_secs` seconds.
    IntakeThrottled = ("intake.throttled", 429),
    /// The item type does not exist in this project.
    PlanTypeNotFound = ("plan.type_not_found", 404),
    /// Another item type of the project already has this name.
    PlanTypeExists = ("plan.type_exists", 409),
    /// The workflow, or the state in it, does not exist in this project.
    PlanStateNotFound = ("plan.state_not_found", 404),
    /// The workflow already has a state with this name.
    PlanStateExists = ("plan.state_exists", 409),
    /// Items are still in the state (`details.items` counts them), or it is the last state of a workflow in use.
    PlanStateInUse = ("plan.state_in_use", 409),
    /// The custom field does not exist in this project.
    PlanFieldNotFound = ("plan.field_not_found", 404),
    /// Another custom field of the project already has this name.
    PlanFieldExists = ("plan.field_exists", 409),
    /// The sprint does not exist in this project.
    SprintNotFound = ("sprint.not_found", 404),
    /// The project already has an active sprint; complete it before starting another.
    SprintAlreadyActive = ("sprint.already_active", 409),
    /// The sprint is not in a state that allows this action (e.g. starting a completed sprint).
    SprintInvalidState = ("sprint.invalid_state", 409),
    /// The file is larger than the instance accepts for an attachment (`attachment_max_bytes`; `details.max_bytes`).
    AttachmentTooLarge = ("item.attachment_too_large", 413),
    /// The attachment does not exist on this item.
    AttachmentNotFound = ("item.attachment_not_found", 404),
    /// No repository of that name exists in this project.
    RepoNotFound = ("code.repo_not_found", 404),
    /// The project already has a repository of that name.
    RepoNameTaken = ("code.repo_name_taken", 409),
    /// Cloning the import URL failed (unreachable, not a git repository, or refused); `details.git` has git's message.
    RepoImportFailed = ("code.import_failed", 422),
    /// The git command needed for this operation failed on the server.
    GitFailed = ("code.git_failed", 500),
    /// The repository mirrors an external URL and only changes by fetching from it: push to the source instead.
    MirrorReadOnly = ("code.mirror_read_only", 409),
    /// The repository is not a mirror (only mirrors can be synced).
    NotAMirror = ("code.not_a_mirror", 409),
    /// No change request with that number exists in this repository.
    CrNotFound = ("code.cr_not_found", 404),
    /// The repository has no commit with that id.
    CommitNotFound = ("code.commit_not_found", 404),
    /// The merge gate is not passed; `details.conditions` lists each unmet condition (`id`, `message`).
    MergeBlocked = ("code.merge_blocked", 409),
    /// No branch, tag or commit of that name exists in the repository (browsing).
    RefNotFound = ("code.ref_not_found", 404),
    /// No file or directory exists at that path at the given ref (browsing).
    PathNotFound = ("code.path_not_found", 404),
    /// No comment with that id exists on this change request.
    CommentNotFound = ("code.comment_not_found", 404),
    /// No comment thread with that id exists on this change request.
    ThreadNotFound = ("code.thread_not_found", 404),
    /// No merge rule set for that target-branch pattern exists in this repository.
    MergeRulesNotFound = ("code.merge_rules_not_found", 404),
    /// No pipeline run with that number exists in this project.
    RunNotFound = ("build.run_not_found", 404),
    /// The run has finished (success, failure or cancelled) and cannot be cancelled.
    RunFinished = ("build.run_finished", 409),
    /// The ref has no pipeline file that runs for this trigger (`.ouro/pipelines/*.yml`).
    NoPipeline = ("build.no_pipeline", 422),
    /// A runner wrote with an attempt token that is no longer the job's current one (its lease expired and the job was claimed again, or the job ended).
    StaleAttempt = ("build.stale_attempt", 409),
    /// The run has not finished yet (queued or running) and cannot be re-run; cancel it or wait.
    RunNotFinished = ("build.run_not_finished", 409),
    /// The artifact store is full (the disk, or the configured `artifacts.capacity_bytes`); nothing of the upload was kept.
    StorageFull = ("build.storage_full", 507),
    /// An artifact or cache archive is larger than the per-file or per-job limit.
    ArtifactTooLarge = ("build.artifact_too_large", 413),
    /// No artifact with that id exists in this run (or it expired).
    ArtifactNotFound = ("build.artifact_not_found", 404),
    /// No job with that id exists in this pipeline run (or no such attempt of it).
    JobNotFound = ("build.job_not_found", 404),
    /// The requested byte range or offset is outside the job log; `Content-Range: bytes */SIZE` gives its size.
    LogRange = ("build.log_range", 416),
    /// A variable or secret name is not `[A-Z_][A-Z0-9_]*` (at most 100 characters), or starts with the reserved `OURO_`; `details.field` is `name`.
    InvalidVariableName = ("build.invalid_variable_name", 422),
    /// A variable or secret value is over 64 KiB, or a secret is shorter than 6 bytes (it could not be masked in logs); `details.field` is `value`.
    InvalidVariableValue = ("build.invalid_variable_value", 422),
    /// No variable or secret of that name exists in this project for that environment.
    VariableNotFound = ("build.variable_not_found", 404),
    /// A runner's log chunk does not fit the stored log: it leaves a gap or differs from bytes already written at its offset (`details.reason`).
    LogChunkRejected = ("build.log_chunk_rejected", 409),
    /// The runner registration token or runner token is unknown, used or expired.
    RunnerTokenInvalid = ("build.runner_token_invalid", 401),
    /// No runner with that id exists.
    RunnerNotFound = ("build.runner_not_found", 404),
    /// A test or coverage report is not well-formed XML, or uses an entity other than the five XML ones; `details` give `file`, `line`, `column`.
    TestXmlMalformed = ("test.xml_malformed", 422),
    /// A test or coverage report declares entities in a DOCTYPE: refused, entities are never expanded; `details` give `file`, `line`, `column`.
    TestXmlDtdRefused = ("test.xml_dtd_refused", 422),
    /// A test or coverage report is not valid UTF-8; `details` give `file`, `line`, `column`.
    TestNotUtf8 = ("test.not_utf8", 422),
    /// A test or coverage report exceeds a parser limit (file size, element depth, attribute size, number of cases); `details` give `file`, `line`, `column`.
    TestLimitExceeded = ("test.limit_exceeded", 422),
    /// A file given as a JUnit report is not one: its root element is not `testsuites` or `testsuite`.
    TestNotJunit = ("test.not_junit", 422),
    /// A file given as coverage is neither Cobertura XML nor LCOV.
    TestCoverageUnknownFormat = ("test.coverage_unknown_format", 422),
    /// A Cobertura or LCOV report has a line or value that makes no sense (e.g. a hit count that is not a number); `details` give `file`, `line`, `column`.
    TestCoverageMalformed = ("test.coverage_malformed", 422),
    // Test (results)
    /// No test case with that id exists in this project.
    TestCaseNotFound = ("test.case_not_found", 404),
    // Release (releases)
    /// No release with that version exists in this project.
    ReleaseNotFound = ("release.not_found", 404),
    /// The pipeline run a release is made from did not succeed; `details.status` gives its status.
    ReleaseRunNotSuccessful = ("release.run_not_successful", 422),
    /// An artifact of the run is expired or its blob is missing, so the release cannot be made or bundled; `details.artifacts` (at creation) or `details.missing` (when bundling) names each.
    ReleaseArtifactsUnavailable = ("release.artifacts_unavailable", 422),
    /// No releasable commits since the previous release (no `feat`, `fix`, `perf` or breaking change): no version to compute.
    ReleaseNothingToRelease = ("release.nothing_to_release", 422),
    /// The project already has a release with that version.
    ReleaseVersionExists = ("release.version_exists", 409),
    /// The release's tag already exists in the repository (perhaps pushed by someone else in between).
    ReleaseTagExists = ("release.tag_exists", 409),
    /// A published or withdrawn release cannot be changed.
    ReleaseImmutable = ("release.immutable", 409),
    /// The release is not in a state that allows this (only a published release can be withdrawn).
    ReleaseWrongState = ("release.wrong_state", 409),
    // Release (versions and notes)
    /// A version is not SemVer (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`, an optional leading `v`), or a pre-release label is not a SemVer identifier; `details.field` names the field.
    ReleaseInvalidVersion = ("release.invalid_version", 422),
    /// A release notes template does not compile or fails while rendering (syntax error, unknown filter, out of fuel, output too large); `details` give `line` and `detail`.
    ReleaseTemplateInvalid = ("release.template_invalid", 422),
    /// The commit a release is computed for does not exist in the repository.
    ReleaseCommitNotFound = ("release.commit_not_found", 404),
    /// The previous release's tag does not exist in the repository.
    ReleaseTagNotFound = ("release.tag_not_found", 404),
    // Release (promotions)
    /// The release's commit has no `.ouro/environments.yml` and the project settings define no environments.
    EnvironmentsNotConfigured = ("release.environments_not_configured", 404),
    /// The environments file is invalid; `details.diagnostics` list each problem (`FILE:LINE:COL: error[release.env_*]: message`).
    EnvironmentsInvalid = ("release.environments_invalid", 422),
    /// The promotion path has no environment of that name.
    EnvironmentNotFound = ("release.environment_not_found", 404),
    /// No promotion with that id exists in this project.
    PromotionNotFound = ("release.promotion_not_found", 404),
    /// Only published releases (not drafts, not withdrawn) can be promoted.
    PromotionNotPublished = ("release.promotion_not_published", 409),
    /// The environment in front of this one has no succeeded promotion of the release yet; `details.after` names it.
    PromotionOutOfOrder = ("release.promotion_out_of_order", 409),
    /// A gate of the environment fails (e.g. the release's tests failed); `details.gates` give each gate's state.
    PromotionGateFailed = ("release.promotion_gate_failed", 409),
    /// The release already has an open or approved promotion to that environment.
    PromotionExists = ("release.promotion_exists", 409),
    /// The promotion was already approved or rejected.
    PromotionClosed = ("release.promotion_closed", 409),
    /// The caller may not decide this promotion (not in the approvers' group, or self-approval is forbidden); the message says why.
    ApprovalNotAllowed = ("release.approval_not_allowed", 403),
    /// The caller already approved or rejected this promotion.
    ApprovalDuplicate = ("release.approval_duplicate", 409),
    // Release (bundles)
    /// The release has no bundle yet (or no release of that version exists in this project).
    ReleaseBundleNotFound = ("release.bundle_not_found", 404),
    /// The release signing key in the data dir (`keys/release-signing.key`) cannot be read or is not a valid key; an administrator must fix or remove it.
    ReleaseSigningKeyUnavailable = ("release.signing_key_unavailable", 500),
    // Deploy
    /// A deployment (or rollback) of this environment is already running; `details.deployment` names it.
    DeployInProgress = ("deploy.in_progress", 409),
    /// The release's commit has no `.ouro/services.yml`: there is nothing to run.
    DeployNoServices = ("deploy.no_services", 422),
    /// The release's `.ouro/services.yml` has errors; `details.diagnostics` lists them with file:line:column.
    DeployServicesInvalid = ("deploy.services_invalid", 422),
    /// The release has no verified bundle to run (it was never published, or its bundle is missing or fails verification).
    DeployBundleUnavailable = ("deploy.bundle_unavailable", 422),
    /// The environment has no earlier release to go back to.
    DeployNothingToRollBack = ("deploy.nothing_to_roll_back", 409),
    /// No deployment with that number in this project.
    DeploymentNotFound = ("deploy.deployment_not_found", 404),
    /// Nothing was ever deployed to that environment of this project.
    DeployEnvironmentNotFound = ("deploy.environment_not_found", 404),
}

/// An error that reaches users: a stable code, a message for humans, optional details.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}", code = self.code.as_str())]
pub struct OuroError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl OuroError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A validation error that names the offending field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
            .with_details(serde_json::json!({ "field": field }))
    }

    /// The 409 for an update made against an old `version` of a record (`what`: "project",
    /// "item", ...); the details carry the version the record has now.
    pub fn stale_version(what: &str, current: i64) -> Self {
        Self::new(
            ErrorCode::StaleVersion,
            format!("the {what} was changed by someone else; reload and apply your change again"),
        )
        .with_details(serde_json::json!({ "current_version": current }))
    }

    /// An internal error: the cause is logged by the caller, the client sees a generic message.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "internal error; the server log has the details",
        )
    }

    /// The JSON body sent to clients.
    pub fn body(&self) -> Value {
        let mut e = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        serde_json::json!({ "error": e })
    }
}

/// The Markdown table in `docs/errors.md` (a test keeps the file in step with this table).
pub fn markdown_table() -> String {
    let mut out = String::from("| code | HTTP status | meaning |\n|---|---|---|\n");
    for c in ErrorCode::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            c.as_str(),
            c.http_status(),
            c.description()
        ));
    }
    out
}

pub type Result<T, E = OuroError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_dotted_and_map_to_error_statuses() {
        let mut seen = HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {}", c.as_str());
            assert!((400..600).contains(&c.http_status()), "{}", c.as_str());
            // Each dotted segment starts with a letter; digits may follow (`test.not_utf8`).
            assert!(
                c.as_str().split('.').all(|seg| {
                    seg.starts_with(|ch: char| ch.is_ascii_lowercase())
                        && seg
                            .chars()
                            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
                }),
                "{}",
                c.as_str()
            );
        }
    }
}
