//! The next SemVer version from the Conventional Commits since the previous release.
//!
//! | commits since the previous release | 1.x and later | 0.x (default rules) |
//! |---|---|---|
//! | a breaking change (`!` or `BREAKING CHANGE:`) | major | minor (`zero_major_bumps_minor`) |
//! | a `feat` | minor | minor (patch with `zero_minor_bumps_patch`) |
//! | a `fix` or `perf` | patch | patch |
//! | anything else only | no release | no release |
//!
//! A previous pre-release counts as its target: after `1.1.0-rc.1` a fix gives `1.1.0`, a breaking
//! change `2.0.0`. With a pre-release label (`rc`) the version is `TARGET-rc.N`, N one more than
//! the highest `TARGET-rc.*` among the existing versions.

use std::fmt;

use ouro_core::error::{ErrorCode, OuroError};
use schemars::JsonSchema;
use semver::{BuildMetadata, Prerelease, Version};
use serde::{Deserialize, Serialize};

use crate::conventional::Conventional;

/// How versions move, configurable per project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rules {
    /// In 0.x a breaking change bumps the minor version instead of going to 1.0.0.
    pub zero_major_bumps_minor: bool,
    /// In 0.x a feature bumps the patch version instead of the minor.
    pub zero_minor_bumps_patch: bool,
    /// The version of the first release (no previous one).
    pub initial: Version,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            zero_major_bumps_minor: true,
            zero_minor_bumps_patch: false,
            initial: Version::new(0, 1, 0),
        }
    }
}

/// Which part of the version a set of commits asks to raise; ordered `None < Patch < Minor < Major`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Bump {
    None,
    Patch,
    Minor,
    Major,
}

impl Bump {
    pub fn as_str(self) -> &'static str {
        match self {
            Bump::None => "none",
            Bump::Patch => "patch",
            Bump::Minor => "minor",
            Bump::Major => "major",
        }
    }
}

impl fmt::Display for Bump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one commit asks for, before the 0.x rules: breaking -> major, `feat` -> minor,
/// `fix`/`perf` -> patch, anything else (and non-conventional messages) -> none.
pub fn bump_of(c: &Conventional) -> Bump {
    if c.breaking {
        return Bump::Major;
    }
    match c.kind.as_deref() {
        Some("feat") => Bump::Minor,
        Some("fix") | Some("perf") => Bump::Patch,
        _ => Bump::None,
    }
}

/// The computed next version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Next {
    pub version: Version,
    /// The part that was raised, after the 0.x rules (`None` only for a pre-release counter or a
    /// first release with nothing releasable).
    pub bump: Bump,
    /// Why, for people: "minor: 2 features, 1 fix since 0.3.1".
    pub reason: String,
}

/// There is nothing to release; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoRelease {
    pub message: String,
}

impl fmt::Display for NoRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Parses a version given by a person: SemVer with an optional leading `v` (`v1.2.3`,
/// `2.0.0-rc.1`). Anything else is `release.invalid_version` (422) naming the field `version`.
pub fn explicit(s: &str) -> Result<Version, OuroError> {
    let t = s.trim();
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    Version::parse(t).map_err(|e| {
        OuroError::new(
            ErrorCode::ReleaseInvalidVersion,
            format!(
                "{s:?} is not a SemVer version (MAJOR.MINOR.PATCH, e.g. 1.4.0 or 2.0.0-rc.1): {e}"
            ),
        )
        .with_details(serde_json::json!({ "field": "version" }))
    })
}

/// Checks a pre-release label (`rc`, `beta`, `alpha.x`): dot-separated SemVer identifiers,
/// at most 32 characters, not ending in a number (the counter is added after it).
pub fn pre_label(label: &str) -> Result<&str, OuroError> {
    let bad = |why: &str| {
        OuroError::new(
            ErrorCode::ReleaseInvalidVersion,
            format!("{label:?} is not a pre-release label: {why}"),
        )
        .with_details(serde_json::json!({ "field": "pre" }))
    };
    if label.is_empty() || label.len() > 32 {
        return Err(bad("it must have 1 to 32 characters"));
    }
    for part in label.split('.') {
        if part.is_empty() || !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("use letters, digits and hyphens, separated by dots"));
        }
    }
    let last = label.rsplit('.').next().unwrap_or("");
    if last.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("it must not end in a number"));
    }
    Ok(label)
}

/// The next version after `previous` for `commits`; `pre` asks for a pre-release (`rc` ->
/// `-rc.N`), counted against `existing` (every version the project has, drafts included).
pub fn next(
    previous: Option<&Version>,
    commits: &[Conventional],
    rules: &Rules,
    pre: Option<&str>,
    existing: &[Version],
) -> Result<Next, NoRelease> {
    if let Some(label) = pre {
        pre_label(label).map_err(|e| NoRelease { message: e.message })?;
    }
    let asked = commits.iter().map(bump_of).max().unwrap_or(Bump::None);
    let summary = summary(commits);
    let (target, bump, reason) = match previous {
        None => {
            if commits.is_empty() {
                return Err(NoRelease {
                    message: "no commits to release".into(),
                });
            }
            (
                strip(&rules.initial),
                asked,
                format!("first release: {summary}"),
            )
        }
        Some(prev) => {
            if asked == Bump::None {
                let what = if commits.is_empty() {
                    "no commits".to_string()
                } else {
                    format!("only {summary}")
                };
                return Err(NoRelease {
                    message: format!(
                        "nothing to release since {prev}: {what} (a breaking change, `feat`, `fix` or `perf` makes a release; give an explicit version to release anyway)"
                    ),
                });
            }
            let (v, bump) = apply(prev, asked, rules).ok_or_else(|| NoRelease {
                message: format!(
                    "{prev} cannot be raised by a {asked} bump: the number is at its maximum"
                ),
            })?;
            let rule = if prev.major == 0 && bump != asked {
                format!(" (0.x rule: {asked} counts as {bump})")
            } else {
                String::new()
            };
            (v, bump, format!("{bump}: {summary} since {prev}{rule}"))
        }
    };
    match pre {
        None => Ok(Next {
            version: target,
            bump,
            reason,
        }),
        Some(label) => {
            let n = counter(&target, label, previous, existing) + 1;
            let mut version = target;
            version.pre = Prerelease::new(&format!("{label}.{n}")).map_err(|e| NoRelease {
                message: format!("{label:?} is not a pre-release label: {e}"),
            })?;
            if let Some(prev) = previous.filter(|p| version <= **p) {
                // 1.3.0-beta.1 sorts before 1.3.0-rc.2: SemVer compares labels as text.
                return Err(NoRelease {
                    message: format!(
                        "{version} would sort before the previous release {prev}; use a label that sorts after {:?} or an explicit version",
                        prev.pre.as_str()
                    ),
                });
            }
            Ok(Next {
                version,
                bump,
                reason: format!("{reason}; pre-release {label}.{n}"),
            })
        }
    }
}

/// The highest N of `target-label.N` among the existing versions (and the previous one).
fn counter(target: &Version, label: &str, previous: Option<&Version>, existing: &[Version]) -> u64 {
    existing
        .iter()
        .chain(previous)
        .filter(|v| v.major == target.major && v.minor == target.minor && v.patch == target.patch)
        .filter_map(|v| {
            let pre = v.pre.as_str();
            let rest = pre.strip_prefix(label)?.strip_prefix('.')?;
            rest.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

fn strip(v: &Version) -> Version {
    Version {
        pre: Prerelease::EMPTY,
        build: BuildMetadata::EMPTY,
        ..v.clone()
    }
}

/// Raises `prev` by `asked` under the rules; returns the version and the effective bump.
fn apply(prev: &Version, asked: Bump, rules: &Rules) -> Option<(Version, Bump)> {
    let mut bump = asked;
    if prev.major == 0 {
        if bump == Bump::Major && rules.zero_major_bumps_minor {
            bump = Bump::Minor;
        } else if bump == Bump::Minor && rules.zero_minor_bumps_patch {
            bump = Bump::Patch;
        }
    }
    let base = strip(prev);
    if !prev.pre.is_empty() {
        // A pre-release already stands for its target: 1.1.0-rc.2 plus a fix is 1.1.0; plus a
        // breaking change it is 2.0.0 (the target was only a minor).
        let reached = match bump {
            Bump::Major => base.minor == 0 && base.patch == 0,
            Bump::Minor => base.patch == 0,
            Bump::Patch | Bump::None => true,
        };
        if reached {
            return Some((base, bump));
        }
    }
    let v = match bump {
        Bump::Major => Version::new(base.major.checked_add(1)?, 0, 0),
        Bump::Minor => Version::new(base.major, base.minor.checked_add(1)?, 0),
        Bump::Patch => Version::new(base.major, base.minor, base.patch.checked_add(1)?),
        Bump::None => base,
    };
    Some((v, bump))
}

/// "1 breaking change, 2 features, 1 fix, 3 other commits".
fn summary(commits: &[Conventional]) -> String {
    let mut breaking = 0;
    let mut feat = 0;
    let mut fix = 0;
    let mut perf = 0;
    let mut other = 0;
    let mut other_kinds: Vec<&str> = Vec::new();
    for c in commits {
        if c.breaking {
            breaking += 1;
            continue;
        }
        match c.kind.as_deref() {
            Some("feat") => feat += 1,
            Some("fix") => fix += 1,
            Some("perf") => perf += 1,
            k => {
                other += 1;
                let k = k.unwrap_or("not conventional");
                if !other_kinds.contains(&k) {
                    other_kinds.push(k);
                }
            }
        }
    }
    let mut parts = Vec::new();
    let mut add = |n: usize, one: &str, many: &str| {
        if n > 0 {
            parts.push(format!("{n} {}", if n == 1 { one } else { many }));
        }
    };
    add(breaking, "breaking change", "breaking changes");
    add(feat, "feature", "features");
    add(fix, "fix", "fixes");
    add(perf, "performance change", "performance changes");
    add(other, "other commit", "other commits");
    if let Some(last) = parts.last_mut().filter(|_| other > 0) {
        other_kinds.sort_unstable();
        last.push_str(&format!(" ({})", other_kinds.join(", ")));
    }
    if parts.is_empty() {
        "no commits".into()
    } else {
        parts.join(", ")
    }
}
