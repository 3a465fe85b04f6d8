//! Merge rules per target-branch pattern (`code_branch_merge_rules`). A repository has one
//! default rule set ([`crate::cr::rules`], table `code_merge_rules`) and any number of rule sets
//! keyed by a glob over the target branch (`main`, `release/*`, `hotfix/**`).
//!
//! Which rule set applies to a change request into branch `b`: among the patterns matching
//! `b`, the most specific one ([`specificity`]):
//! 1. an exact name (no `*` or `?`) beats any glob;
//! 2. between globs, the longer literal prefix (the characters before the first `*` or `?`)
//!    wins: `release/1.*` beats `release/*`, which beats `*`;
//! 3. then the one with fewer wildcard characters, then the longer pattern, then the
//!    alphabetically first (so the choice never depends on the order rules were saved).
//!
//! Without a matching pattern the repository default applies. Saving or deleting a rule set
//! appends `repo.settings_changed` in the same transaction.

use std::cmp::Reverse;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Executor, Store, StoreError, q};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use crate::cr::{self, MergeRules};
use crate::repos::Repo;

/// At most this many patterns per repository.
pub const MAX_PATTERNS: usize = 100;

/// A rule set for the target branches matching `pattern`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct BranchMergeRules {
    /// A branch name or glob: `*` stays within one `/` segment, `**` crosses them, `?` is one
    /// character.
    pub pattern: String,
    pub rules: MergeRules,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
}

/// The rule set that applies to one target branch and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Effective {
    /// The pattern whose rule set applies; `null`: the repository default.
    pub pattern: Option<String>,
    pub rules: MergeRules,
}

/// The sort key of a pattern: greater is more specific (see the module documentation).
pub fn specificity(pattern: &str) -> impl Ord + use<> {
    let wild = |c: char| c == '*' || c == '?';
    let exact = !pattern.contains(wild);
    let prefix = pattern.find(wild).unwrap_or(pattern.len());
    let wildcards = pattern.chars().filter(|c| wild(*c)).count();
    (
        exact,
        prefix,
        Reverse(wildcards),
        pattern.len(),
        Reverse(pattern.to_string()),
    )
}

/// The most specific pattern of `patterns` matching `branch`.
pub fn best_match<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
    branch: &str,
) -> Option<&'a str> {
    patterns
        .into_iter()
        .filter(|p| crate::glob::matches(p, branch))
        .max_by_key(|p| specificity(p))
}

fn not_found(pattern: &str) -> OuroError {
    OuroError::new(
        ErrorCode::MergeRulesNotFound,
        format!("there are no merge rules for the pattern {pattern:?} in this repository"),
    )
}

/// Checks a target-branch pattern; returns it without a leading `refs/heads/`.
pub fn validate_pattern(pattern: &str) -> Result<String, OuroError> {
    crate::push_rules::validate_pattern(pattern).map_err(|m| OuroError::field("pattern", m))
}

/// Every per-branch rule set of a repository, most specific first.
pub async fn list(
    ex: &mut impl Executor,
    repo_id: i64,
) -> Result<Vec<BranchMergeRules>, StoreError> {
    let rows = q("SELECT * FROM code_branch_merge_rules WHERE repo_id = $1")
        .bind(repo_id)
        .fetch_all(ex)
        .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let text = r.text("rules")?;
            Ok(BranchMergeRules {
                pattern: r.text("pattern")?,
                rules: serde_json::from_str(&text).map_err(|e| {
                    tracing::error!(error = %e, repo = repo_id, "stored merge rules are not readable");
                    OuroError::internal()
                })?,
                updated_at: r.i64("updated_at")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    out.sort_by_key(|b| Reverse(specificity(&b.pattern)));
    Ok(out)
}

/// The rule set that applies to change requests into `target`.
pub async fn effective(
    ex: &mut impl Executor,
    repo_id: i64,
    target: &str,
) -> Result<Effective, StoreError> {
    let sets = list(ex, repo_id).await?;
    // `list` is sorted most specific first: the first match is the best one.
    if let Some(b) = sets
        .into_iter()
        .find(|b| crate::glob::matches(&b.pattern, target))
    {
        return Ok(Effective {
            pattern: Some(b.pattern),
            rules: b.rules,
        });
    }
    Ok(Effective {
        pattern: None,
        rules: cr::rules(ex, repo_id).await?,
    })
}

/// Creates or replaces the rule set of `pattern`.
pub async fn set(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    pattern: &str,
    new: &MergeRules,
) -> Result<BranchMergeRules, StoreError> {
    let pattern = validate_pattern(pattern)?;
    let rules = cr::normalize_rules(new)?;
    let text = serde_json::to_string(&rules).map_err(|_| OuroError::internal())?;
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let existing = list(&mut tx, repo.id).await?;
    if existing.len() >= MAX_PATTERNS && !existing.iter().any(|b| b.pattern == pattern) {
        return Err(OuroError::field(
            "pattern",
            format!("at most {MAX_PATTERNS} patterns per repository"),
        )
        .into());
    }
    q(
        "INSERT INTO code_branch_merge_rules (repo_id, pattern, rules, updated_at) \
       VALUES ($1, $2, $3, $4) \
       ON CONFLICT (repo_id, pattern) DO UPDATE SET rules = $3, updated_at = $4",
    )
    .bind(repo.id)
    .bind(pattern.as_str())
    .bind(text.as_str())
    .bind(now)
    .execute(&mut tx)
    .await?;
    tx.append(
        NewEvent::new(
            ev::REPO_SETTINGS_CHANGED,
            actor,
            repo.id,
            json!({"repo": repo.name, "branch_merge_rules": {"pattern": pattern, "rules": rules}}),
        )
        .in_project(repo.project_id, slug),
    )
    .await?;
    tx.commit().await?;
    Ok(BranchMergeRules {
        pattern,
        rules,
        updated_at: now,
    })
}

/// Deletes the rule set of `pattern` (its branches fall back to a less specific pattern or the
/// repository default). 404 `code.merge_rules_not_found` when there is none.
pub async fn delete(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    pattern: &str,
) -> Result<(), StoreError> {
    let pattern = pattern.trim();
    let pattern = pattern.strip_prefix("refs/heads/").unwrap_or(pattern);
    let mut tx = store.begin().await?;
    let n = q("DELETE FROM code_branch_merge_rules WHERE repo_id = $1 AND pattern = $2")
        .bind(repo.id)
        .bind(pattern)
        .execute(&mut tx)
        .await?;
    if n == 0 {
        return Err(not_found(pattern).into());
    }
    tx.append(
        NewEvent::new(
            ev::REPO_SETTINGS_CHANGED,
            actor,
            repo.id,
            json!({"repo": repo.name, "branch_merge_rules": {"pattern": pattern, "deleted": true}}),
        )
        .in_project(repo.project_id, slug),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rule_sets_are_stored_and_chosen_on_both_databases() {
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
            let repo = crate::repos::create(
                &store,
                &dir.path().join("repos"),
                (project.id, "demo"),
                &actor,
                &crate::repos::NewRepo {
                    name: "app".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let with = |n: u32| MergeRules {
                required_approvals: n,
                required_checks: vec![" ci ".into(), "ci".into()],
                ..MergeRules::default()
            };
            let saved = set(
                &store,
                &repo,
                "demo",
                &actor,
                "refs/heads/release/*",
                &with(2),
            )
            .await
            .unwrap();
            assert_eq!(saved.pattern, "release/*", "{}", db.name());
            assert_eq!(saved.rules.required_checks, vec!["ci"]);
            set(&store, &repo, "demo", &actor, "release/1.0", &with(0))
                .await
                .unwrap();
            // Saving again replaces.
            set(&store, &repo, "demo", &actor, "release/1.0", &with(5))
                .await
                .unwrap();
            let mut conn = store.read().await.unwrap();
            let all = list(&mut conn, repo.id).await.unwrap();
            assert_eq!(
                all.iter().map(|b| b.pattern.as_str()).collect::<Vec<_>>(),
                vec!["release/1.0", "release/*"]
            );
            let e = effective(&mut conn, repo.id, "release/1.0").await.unwrap();
            assert_eq!(
                (e.pattern.as_deref(), e.rules.required_approvals),
                (Some("release/1.0"), 5)
            );
            let e = effective(&mut conn, repo.id, "release/2.0").await.unwrap();
            assert_eq!(e.pattern.as_deref(), Some("release/*"));
            let e = effective(&mut conn, repo.id, "main").await.unwrap();
            assert_eq!((e.pattern, e.rules), (None, MergeRules::default()));
            drop(conn);
            delete(&store, &repo, "demo", &actor, "release/1.0")
                .await
                .unwrap();
            let e = effective(&mut store.read().await.unwrap(), repo.id, "release/1.0")
                .await
                .unwrap();
            assert_eq!(e.pattern.as_deref(), Some("release/*"));
            let err: OuroError = delete(&store, &repo, "demo", &actor, "release/1.0")
                .await
                .unwrap_err()
                .into();
            assert_eq!(err.code, ErrorCode::MergeRulesNotFound);
            let err: OuroError = set(&store, &repo, "demo", &actor, "a b", &with(1))
                .await
                .unwrap_err()
                .into();
            assert_eq!(err.code, ErrorCode::ValidationFailed);
        }
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let all = [
            "*",
            "release/*",
            "release/1.*",
            "release/1.0",
            "**",
            "rel?ase/*",
        ];
        let pick = |b: &str| best_match(all.iter().copied(), b);
        assert_eq!(pick("release/1.0"), Some("release/1.0"));
        assert_eq!(pick("release/1.1"), Some("release/1.*"));
        assert_eq!(pick("release/2.0"), Some("release/*"));
        assert_eq!(pick("relxase/2.0"), Some("rel?ase/*"));
        assert_eq!(pick("main"), Some("*"));
        assert_eq!(pick("feature/x/y"), Some("**"));
        assert_eq!(best_match(["main"], "develop"), None);
        // Exact beats a glob even with a longer literal prefix.
        assert_eq!(best_match(["ma*n", "main"], "main"), Some("main"));
        assert_eq!(best_match(["main", "ma*n"], "main"), Some("main"));
        // Same prefix: fewer wildcards, then the longer pattern.
        assert_eq!(best_match(["a/**", "a/*"], "a/b"), Some("a/*"));
    }
}
