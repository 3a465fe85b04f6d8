//! A repository's push rules: protected branches (`code_protected_branches`), disabled secret
//! scanning rules and size limits (`code_push_settings`). Saving replaces the whole set and
//! appends `repo.push_rules_changed` in the same transaction.
//!
//! Protected tags (`code_protected_tags`): patterns over tag names (`v*`); creating a matching
//! tag needs the maintainer role, moving or deleting one is refused for everyone.
//!
//! Without saved rules the default branch is protected by [`default_protection`]: direct pushes
//! by maintainers (and owners) only, no force push, no deletion.

use ouro_core::events as ev;
use ouro_core::{Actor, NewEvent, OuroError, Role};
use ouro_store::{Executor, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::repos::Repo;
use crate::secrets;

pub const MAX_PROTECTED: usize = 100;
pub const MAX_PATTERN: usize = 200;

/// Who may move a protected branch with a direct push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushRole {
    /// Nobody: the branch only moves through Ouro's own merges.
    Nobody,
    /// Developers, maintainers and owners.
    Developer,
    /// Maintainers and owners.
    Maintainer,
}

impl PushRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PushRole::Nobody => "nobody",
            PushRole::Developer => "developer",
            PushRole::Maintainer => "maintainer",
        }
    }

    pub fn parse(s: &str) -> Option<PushRole> {
        match s {
            "nobody" => Some(PushRole::Nobody),
            "developer" => Some(PushRole::Developer),
            "maintainer" => Some(PushRole::Maintainer),
            _ => None,
        }
    }

    /// May a member with `role` push directly?
    pub fn allows(self, role: Option<Role>) -> bool {
        match self {
            PushRole::Nobody => false,
            PushRole::Developer => role >= Some(Role::Developer),
            PushRole::Maintainer => role >= Some(Role::Maintainer),
        }
    }
}

/// One protection rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectedBranch {
    /// A branch name or glob (`main`, `release/*`; `*` stays within one `/` segment, `**`
    /// crosses them). The first matching rule decides.
    pub pattern: String,
    /// Who may push directly: nobody, developer or maintainer.
    pub push_role: PushRole,
    #[serde(default)]
    pub allow_force_push: bool,
    #[serde(default)]
    pub allow_deletion: bool,
}

/// The rule a repository without saved rules gets.
pub fn default_protection(repo: &Repo) -> ProtectedBranch {
    ProtectedBranch {
        pattern: repo.default_branch.clone(),
        push_role: PushRole::Maintainer,
        allow_force_push: false,
        allow_deletion: false,
    }
}

/// A repository's push rules as they apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PushRules {
    /// False while no protection was saved: `protected_branches` is then the built-in default
    /// (the default branch, maintainers only, no force push, no deletion).
    pub custom_protection: bool,
    pub protected_branches: Vec<ProtectedBranch>,
    /// Secret scanning rule ids that are off for this repository.
    pub disabled_secret_rules: Vec<String>,
    /// Largest push (pack) in bytes; `null`: the server's `push_max_bytes`.
    pub max_push_bytes: Option<i64>,
    /// Largest file (blob) in bytes; `null`: the server's `push_max_file_bytes`.
    pub max_file_bytes: Option<i64>,
    /// Protected tag patterns (`v*`, `release/**`): maintainers may create a matching tag;
    /// nobody may move or delete one by a push.
    #[serde(default)]
    pub protected_tags: Vec<String>,
}

impl PushRules {
    /// The first protected tag pattern matching `tag` (a short name, without `refs/tags/`).
    pub fn tag_protection(&self, tag: &str) -> Option<&str> {
        self.protected_tags
            .iter()
            .find(|p| crate::glob::matches(p, tag))
            .map(String::as_str)
    }

    /// The first protection rule matching `branch` (a short name, without `refs/heads/`).
    pub fn protection(&self, branch: &str) -> Option<&ProtectedBranch> {
        self.protected_branches
            .iter()
            .find(|p| crate::glob::matches(&p.pattern, branch))
    }

    pub fn secret_rule_enabled(&self, id: &str) -> bool {
        !self.disabled_secret_rules.iter().any(|d| d == id)
    }
}

/// What a save sends. Omitted `protected_branches` or `disabled_secret_rules` keep their saved
/// values; the two limits are always replaced (omitted or `null`: the server-wide limit).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRulesUpdate {
    /// Replaces all protection rules (an empty list protects nothing).
    #[serde(default)]
    pub protected_branches: Option<Vec<ProtectedBranch>>,
    /// Replaces the disabled secret rule ids.
    #[serde(default)]
    pub disabled_secret_rules: Option<Vec<String>>,
    /// Bytes, at least 1; `null` or omitted: the server-wide limit.
    #[serde(default)]
    pub max_push_bytes: Option<i64>,
    #[serde(default)]
    pub max_file_bytes: Option<i64>,
    /// Replaces the protected tag patterns (omitted: unchanged; an empty list protects none).
    #[serde(default)]
    pub protected_tags: Option<Vec<String>>,
}

/// Checks a tag pattern; returns it without a leading `refs/tags/`.
pub fn validate_tag_pattern(p: &str) -> Result<String, String> {
    let p = p.trim();
    let p = p.strip_prefix("refs/tags/").unwrap_or(p);
    validate_pattern(p).map_err(|m| m.replace("branch", "tag"))
}

/// Checks a branch pattern; returns it without a leading `refs/heads/`.
pub fn validate_pattern(p: &str) -> Result<String, String> {
    let p = p.trim();
    let p = p.strip_prefix("refs/heads/").unwrap_or(p);
    if p.is_empty() || p.len() > MAX_PATTERN {
        return Err("a pattern must be 1 to 200 characters".into());
    }
    if p.chars()
        .any(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '\\' | '['))
        || p.contains("..")
        || p.contains("//")
        || p.contains("@{")
        || p.starts_with('/')
        || p.starts_with('-')
        || p.ends_with('/')
        || p.ends_with('.')
        || p.ends_with(".lock")
    {
        return Err(format!(
            "{p:?} is not a valid branch pattern (a branch name, `*` and `**` allowed)"
        ));
    }
    Ok(p.to_string())
}

fn field(name: &str, msg: String) -> StoreError {
    OuroError::field(name, msg).into()
}

/// Loads the rules in effect for `repo`.
pub async fn load(ex: &mut impl Executor, repo: &Repo) -> Result<PushRules, StoreError> {
    let settings = q("SELECT * FROM code_push_settings WHERE repo_id = $1")
        .bind(repo.id)
        .fetch_optional(ex)
        .await?;
    let mut rules = PushRules {
        custom_protection: false,
        protected_branches: vec![default_protection(repo)],
        disabled_secret_rules: Vec::new(),
        max_push_bytes: None,
        max_file_bytes: None,
        protected_tags: Vec::new(),
    };
    rules.protected_tags =
        q("SELECT pattern FROM code_protected_tags WHERE repo_id = $1 ORDER BY position")
            .bind(repo.id)
            .fetch_all(ex)
            .await?
            .iter()
            .map(|r| r.text("pattern"))
            .collect::<Result<_, _>>()?;
    if let Some(s) = settings {
        rules.custom_protection = s.bool("custom_protection")?;
        rules.disabled_secret_rules = s
            .text("disabled_secret_rules")?
            .split(',')
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect();
        rules.max_push_bytes = s.opt_i64("max_push_bytes")?;
        rules.max_file_bytes = s.opt_i64("max_file_bytes")?;
    }
    if rules.custom_protection {
        let rows = q("SELECT * FROM code_protected_branches WHERE repo_id = $1 ORDER BY position")
            .bind(repo.id)
            .fetch_all(ex)
            .await?;
        rules.protected_branches = rows
            .iter()
            .map(|r| {
                Ok(ProtectedBranch {
                    pattern: r.text("pattern")?,
                    push_role: PushRole::parse(&r.text("push_role")?).unwrap_or(PushRole::Nobody),
                    allow_force_push: r.bool("allow_force_push")?,
                    allow_deletion: r.bool("allow_deletion")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
    }
    Ok(rules)
}

/// Saves `update` over the current rules and appends `repo.push_rules_changed`.
pub async fn save(
    store: &Store,
    repo: &Repo,
    project_slug: &str,
    actor: &Actor,
    update: &PushRulesUpdate,
) -> Result<PushRules, StoreError> {
    // Validate everything first.
    let branches = match &update.protected_branches {
        None => None,
        Some(list) => {
            if list.len() > MAX_PROTECTED {
                return Err(field(
                    "protected_branches",
                    format!("at most {MAX_PROTECTED} protection rules"),
                ));
            }
            let mut out: Vec<ProtectedBranch> = Vec::new();
            for b in list {
                let pattern =
                    validate_pattern(&b.pattern).map_err(|m| field("protected_branches", m))?;
                if out.iter().any(|o| o.pattern == pattern) {
                    return Err(field(
                        "protected_branches",
                        format!("the pattern {pattern:?} is listed twice"),
                    ));
                }
                out.push(ProtectedBranch {
                    pattern,
                    ..b.clone()
                });
            }
            Some(out)
        }
    };
    let tags = match &update.protected_tags {
        None => None,
        Some(list) => {
            if list.len() > MAX_PROTECTED {
                return Err(field(
                    "protected_tags",
                    format!("at most {MAX_PROTECTED} protected tag patterns"),
                ));
            }
            let mut out: Vec<String> = Vec::new();
            for t in list {
                let pattern = validate_tag_pattern(t).map_err(|m| field("protected_tags", m))?;
                if !out.contains(&pattern) {
                    out.push(pattern);
                }
            }
            Some(out)
        }
    };
    if let Some(d) = &update.disabled_secret_rules
        && let Some(bad) = d.iter().find(|r| !secrets::is_rule(r))
    {
        return Err(field(
            "disabled_secret_rules",
            format!(
                "{bad:?} is not a secret scanning rule (known: {})",
                secrets::RULES
                    .iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for (name, v) in [
        ("max_push_bytes", update.max_push_bytes),
        ("max_file_bytes", update.max_file_bytes),
    ] {
        if v.is_some_and(|v| v < 1) {
            return Err(field(name, format!("{name} must be at least 1 byte")));
        }
    }

    let mut tx = store.begin().await?;
    let current = load(&mut tx, repo).await?;
    let disabled = match &update.disabled_secret_rules {
        Some(d) => {
            let mut d = d.clone();
            d.sort();
            d.dedup();
            d
        }
        None => current.disabled_secret_rules.clone(),
    };
    let custom = branches.is_some() || current.custom_protection;
    let now = ouro_core::time::now_ms();
    q(
        "INSERT INTO code_push_settings (repo_id, custom_protection, disabled_secret_rules, \
       max_push_bytes, max_file_bytes, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
       ON CONFLICT (repo_id) DO UPDATE SET custom_protection = $2, disabled_secret_rules = $3, \
       max_push_bytes = $4, max_file_bytes = $5, updated_at = $6, \
       version = code_push_settings.version + 1",
    )
    .bind(repo.id)
    .bind(custom)
    .bind(disabled.join(","))
    .bind(update.max_push_bytes)
    .bind(update.max_file_bytes)
    .bind(now)
    .execute(&mut tx)
    .await?;
    if let Some(list) = &branches {
        q("DELETE FROM code_protected_branches WHERE repo_id = $1")
            .bind(repo.id)
            .execute(&mut tx)
            .await?;
        for (i, b) in list.iter().enumerate() {
            q(
                "INSERT INTO code_protected_branches (repo_id, position, pattern, push_role, \
               allow_force_push, allow_deletion) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(repo.id)
            .bind(i as i64)
            .bind(b.pattern.as_str())
            .bind(b.push_role.as_str())
            .bind(b.allow_force_push)
            .bind(b.allow_deletion)
            .execute(&mut tx)
            .await?;
        }
    }
    if let Some(list) = &tags {
        q("DELETE FROM code_protected_tags WHERE repo_id = $1")
            .bind(repo.id)
            .execute(&mut tx)
            .await?;
        for (i, t) in list.iter().enumerate() {
            q("INSERT INTO code_protected_tags (repo_id, position, pattern) VALUES ($1, $2, $3)")
                .bind(repo.id)
                .bind(i as i64)
                .bind(t.as_str())
                .execute(&mut tx)
                .await?;
        }
    }
    let saved = load(&mut tx, repo).await?;
    tx.append(
        NewEvent::new(
            ev::REPO_PUSH_RULES_CHANGED,
            actor,
            repo.id,
            json!({
                "repo": repo.name,
                "before": current,
                "after": saved,
            }),
        )
        .in_project(repo.project_id, project_slug),
    )
    .await?;
    tx.commit().await?;
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for ok in ["main", "release/*", "release/**", "refs/heads/main", "v1.x"] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        assert_eq!(validate_pattern("refs/heads/main").unwrap(), "main");
        for bad in [
            "", "a b", "a..b", "a:b", "/x", "x/", "x.lock", "-x", "a~1", "[x]",
        ] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn rules_are_stored_on_both_databases() {
        for db in ouro_store::testing::backends() {
            let dir = tempfile::tempdir().unwrap();
            let url = db.fresh_url(dir.path()).await;
            let migrations: Vec<ouro_store::Migration> = ouro_store::PLATFORM_MIGRATIONS
                .iter()
                .chain(crate::MIGRATIONS)
                .copied()
                .collect();
            let store = Store::open(&url, &migrations).await.unwrap();
            let actor = Actor::System("test");
            let user =
                ouro_store::accounts::create_user(&store, &actor, "ann", "password-123", true)
                    .await
                    .unwrap();
            let project = ouro_store::projects::create(
                &store,
                &user,
                "demo",
                "Demo",
                "",
                ouro_store::projects::Visibility::Private,
            )
            .await
            .unwrap();
            let root = dir.path().join("repos");
            let repo = crate::repos::create(
                &store,
                &root,
                (project.id, "demo"),
                &actor,
                &crate::repos::NewRepo {
                    name: "app".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();

            // Nothing saved: the default branch, maintainers only.
            let r = load(&mut store.read().await.unwrap(), &repo).await.unwrap();
            assert!(!r.custom_protection, "{}", db.name());
            assert_eq!(r.protected_branches, vec![default_protection(&repo)]);
            assert!(r.protection("main").is_some());
            assert!(r.protection("feature").is_none());

            // Limits and secret rules alone keep the default protection.
            let saved = save(
                &store,
                &repo,
                "demo",
                &actor,
                &PushRulesUpdate {
                    disabled_secret_rules: Some(vec!["high-entropy".into(), "high-entropy".into()]),
                    max_file_bytes: Some(10),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(!saved.custom_protection);
            assert_eq!(saved.disabled_secret_rules, vec!["high-entropy"]);
            assert_eq!(saved.max_file_bytes, Some(10));
            assert!(!saved.secret_rule_enabled("high-entropy"));

            // Saved rules replace the default, in order; the first match decides.
            let rules = vec![
                ProtectedBranch {
                    pattern: "refs/heads/release/**".into(),
                    push_role: PushRole::Nobody,
                    allow_force_push: false,
                    allow_deletion: true,
                },
                ProtectedBranch {
                    pattern: "*".into(),
                    push_role: PushRole::Developer,
                    allow_force_push: true,
                    allow_deletion: false,
                },
            ];
            let saved = save(
                &store,
                &repo,
                "demo",
                &actor,
                &PushRulesUpdate {
                    protected_branches: Some(rules),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(saved.custom_protection);
            assert_eq!(saved.protected_branches[0].pattern, "release/**");
            assert_eq!(saved.disabled_secret_rules, vec!["high-entropy"]);
            assert_eq!(saved.max_file_bytes, None);
            let again = load(&mut store.read().await.unwrap(), &repo).await.unwrap();
            assert_eq!(again, saved);
            assert_eq!(
                again.protection("release/1/x").unwrap().push_role,
                PushRole::Nobody
            );
            assert_eq!(
                again.protection("main").unwrap().push_role,
                PushRole::Developer
            );

            // Bad input changes nothing.
            for bad in [
                PushRulesUpdate {
                    protected_branches: Some(vec![
                        again.protected_branches[1].clone(),
                        again.protected_branches[1].clone(),
                    ]),
                    ..Default::default()
                },
                PushRulesUpdate {
                    disabled_secret_rules: Some(vec!["nope".into()]),
                    ..Default::default()
                },
                PushRulesUpdate {
                    max_push_bytes: Some(0),
                    ..Default::default()
                },
            ] {
                let e: OuroError = save(&store, &repo, "demo", &actor, &bad)
                    .await
                    .unwrap_err()
                    .into();
                assert_eq!(e.code, ouro_core::ErrorCode::ValidationFailed);
            }
            let after = load(&mut store.read().await.unwrap(), &repo).await.unwrap();
            assert_eq!(after, saved);

            // Protected tags: saved in order, deduplicated, kept when omitted.
            let tagged = save(
                &store,
                &repo,
                "demo",
                &actor,
                &PushRulesUpdate {
                    protected_tags: Some(vec!["refs/tags/v*".into(), "v*".into(), "rel/**".into()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(tagged.protected_tags, vec!["v*", "rel/**"], "{}", db.name());
            assert_eq!(tagged.tag_protection("v1.0"), Some("v*"));
            assert_eq!(tagged.tag_protection("rel/a/b"), Some("rel/**"));
            assert_eq!(tagged.tag_protection("x1"), None);
            let kept = save(&store, &repo, "demo", &actor, &PushRulesUpdate::default())
                .await
                .unwrap();
            assert_eq!(kept.protected_tags, tagged.protected_tags);
            let e: OuroError = save(
                &store,
                &repo,
                "demo",
                &actor,
                &PushRulesUpdate {
                    protected_tags: Some(vec!["v 1".into()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err()
            .into();
            assert_eq!(e.details.unwrap()["field"], "protected_tags");
        }
    }

    #[test]
    fn roles() {
        assert!(!PushRole::Nobody.allows(Some(Role::Owner)));
        assert!(PushRole::Maintainer.allows(Some(Role::Owner)));
        assert!(!PushRole::Maintainer.allows(Some(Role::Developer)));
        assert!(PushRole::Developer.allows(Some(Role::Developer)));
        assert!(!PushRole::Developer.allows(Some(Role::Viewer)));
        assert!(!PushRole::Developer.allows(None));
    }
}
