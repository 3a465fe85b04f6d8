//! Next versions: the bump table, the 0.x rules, pre-release counters, explicit versions and
//! "nothing to release".

use ouro_core::ErrorCode;
use ouro_release::conventional::{Conventional, parse};
use ouro_release::version::{Bump, Rules, explicit, next, pre_label};
use proptest::prelude::*;
use semver::Version;

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn msgs(m: &[&str]) -> Vec<Conventional> {
    m.iter().map(|s| parse(s)).collect()
}

/// The next version as text, or "none: <message>".
fn after(prev: Option<&str>, m: &[&str], rules: &Rules) -> String {
    let prev = prev.map(v);
    match next(prev.as_ref(), &msgs(m), rules, None, &[]) {
        Ok(n) => n.version.to_string(),
        Err(e) => format!("none: {}", e.message),
    }
}

#[test]
fn bump_table_from_one_dot_x() {
    let r = Rules::default();
    assert_eq!(after(Some("1.2.3"), &["fix: a"], &r), "1.2.4");
    assert_eq!(after(Some("1.2.3"), &["perf: a"], &r), "1.2.4");
    assert_eq!(after(Some("1.2.3"), &["fix: a", "feat: b"], &r), "1.3.0");
    assert_eq!(after(Some("1.2.3"), &["feat: b", "fix!: c"], &r), "2.0.0");
    assert_eq!(
        after(
            Some("1.2.3"),
            &["docs: x", "fix: a\n\nBREAKING CHANGE: y"],
            &r
        ),
        "2.0.0"
    );
    let n = next(
        Some(&v("1.2.3")),
        &msgs(&["feat: b", "fix: a", "fix: c"]),
        &r,
        None,
        &[],
    )
    .unwrap();
    assert_eq!(n.bump, Bump::Minor);
    assert_eq!(n.reason, "minor: 1 feature, 2 fixes since 1.2.3");
}

#[test]
fn zero_dot_x_rules() {
    let r = Rules::default();
    // Default: in 0.x a breaking change bumps the minor, a feature the minor, a fix the patch.
    assert_eq!(after(Some("0.3.1"), &["feat!: a"], &r), "0.4.0");
    assert_eq!(after(Some("0.3.1"), &["feat: a"], &r), "0.4.0");
    assert_eq!(after(Some("0.3.1"), &["fix: a"], &r), "0.3.2");
    let n = next(Some(&v("0.3.1")), &msgs(&["feat!: a"]), &r, None, &[]).unwrap();
    assert_eq!(n.bump, Bump::Minor);
    assert!(
        n.reason.contains("0.x rule: major counts as minor"),
        "{}",
        n.reason
    );

    // Configured: breaking changes go to 1.0.0, features only bump the patch.
    let strict = Rules {
        zero_major_bumps_minor: false,
        zero_minor_bumps_patch: true,
        ..Rules::default()
    };
    assert_eq!(after(Some("0.3.1"), &["feat!: a"], &strict), "1.0.0");
    assert_eq!(after(Some("0.3.1"), &["feat: a"], &strict), "0.3.2");
    assert_eq!(after(Some("0.3.1"), &["fix: a"], &strict), "0.3.2");
}

#[test]
fn first_release_uses_the_initial_version() {
    assert_eq!(after(None, &["chore: init"], &Rules::default()), "0.1.0");
    let r = Rules {
        initial: v("1.0.0"),
        ..Rules::default()
    };
    assert_eq!(after(None, &["feat: a"], &r), "1.0.0");
    assert_eq!(after(None, &[], &r), "none: no commits to release");
}

#[test]
fn no_release_when_only_chores_and_docs() {
    let r = Rules::default();
    let e = next(
        Some(&v("1.2.3")),
        &msgs(&["chore: deps", "docs: readme", "Update notes"]),
        &r,
        None,
        &[],
    )
    .unwrap_err();
    assert!(
        e.message.starts_with("nothing to release since 1.2.3"),
        "{}",
        e.message
    );
    assert_eq!(
        e.message,
        "nothing to release since 1.2.3: only 3 other commits (chore, docs, not conventional) (a breaking change, `feat`, `fix` or `perf` makes a release; give an explicit version to release anyway)"
    );
    assert_eq!(
        after(Some("1.2.3"), &[], &r),
        "none: nothing to release since 1.2.3: no commits (a breaking change, `feat`, `fix` or `perf` makes a release; give an explicit version to release anyway)"
    );
}

#[test]
fn release_candidates_count_up() {
    let r = Rules::default();
    let prev = v("1.2.3");
    let feat = msgs(&["feat: a"]);
    let n = next(
        Some(&prev),
        &feat,
        &r,
        Some("rc"),
        std::slice::from_ref(&prev),
    )
    .unwrap();
    assert_eq!(n.version, v("1.3.0-rc.1"));
    assert_eq!(n.bump, Bump::Minor);
    let existing = [
        v("1.2.3"),
        v("1.3.0-rc.1"),
        v("1.3.0-rc.2"),
        v("1.2.0-rc.9"),
    ];
    let n = next(Some(&prev), &feat, &r, Some("rc"), &existing).unwrap();
    assert_eq!(n.version, v("1.3.0-rc.3"));
    // Another label counts separately.
    let n = next(Some(&prev), &feat, &r, Some("beta"), &existing).unwrap();
    assert_eq!(n.version, v("1.3.0-beta.1"));

    // After a release candidate, a fix continues towards the same target ...
    let rc = v("1.3.0-rc.2");
    let fix = msgs(&["fix: b"]);
    let n = next(Some(&rc), &fix, &r, Some("rc"), &existing).unwrap();
    assert_eq!(n.version, v("1.3.0-rc.3"));
    // ... or finishes it without a label ...
    assert_eq!(
        next(Some(&rc), &fix, &r, None, &existing).unwrap().version,
        v("1.3.0")
    );
    // ... while a breaking change goes past it.
    let n = next(Some(&rc), &msgs(&["feat!: c"]), &r, None, &existing).unwrap();
    assert_eq!(n.version, v("2.0.0"));
    // A major release candidate already reaches a major target.
    let n = next(Some(&v("2.0.0-rc.1")), &msgs(&["feat!: c"]), &r, None, &[]).unwrap();
    assert_eq!(n.version, v("2.0.0"));

    // A label that sorts before the previous candidate's would go backwards: refused.
    let e = next(Some(&rc), &fix, &r, Some("beta"), &existing).unwrap_err();
    assert!(
        e.message
            .starts_with("1.3.0-beta.1 would sort before the previous release 1.3.0-rc.2"),
        "{}",
        e.message
    );
    // A bad label is refused, not turned into a version.
    assert!(next(Some(&prev), &feat, &r, Some("rc.1"), &[]).is_err());
    assert!(next(Some(&prev), &feat, &r, Some("r c"), &[]).is_err());
    assert_eq!(pre_label("rc").unwrap(), "rc");
    assert_eq!(
        pre_label("").unwrap_err().code,
        ErrorCode::ReleaseInvalidVersion
    );
}

#[test]
fn explicit_versions_override_and_are_validated() {
    assert_eq!(explicit("2.0.0").unwrap(), v("2.0.0"));
    assert_eq!(explicit(" v1.4.0-rc.1 ").unwrap(), v("1.4.0-rc.1"));
    assert_eq!(explicit("1.0.0+build.5").unwrap(), v("1.0.0+build.5"));
    for bad in [
        "", "1", "1.2", "v", "1.2.3.4", "01.2.3", "1.2.3-", "latest", "-1.0.0",
    ] {
        let e = explicit(bad).unwrap_err();
        assert_eq!(e.code, ErrorCode::ReleaseInvalidVersion, "{bad:?}");
        assert_eq!(e.code.http_status(), 422);
        assert_eq!(e.details.unwrap()["field"], "version");
    }
}

#[test]
fn numbers_at_their_maximum_are_no_release_not_a_panic() {
    let top = Version::new(u64::MAX, 0, 0);
    let e = next(
        Some(&top),
        &msgs(&["feat!: a"]),
        &Rules::default(),
        None,
        &[],
    )
    .unwrap_err();
    assert!(e.message.contains("at its maximum"), "{}", e.message);
}

proptest! {
    /// Whatever the previous version and commits, `next` does not panic and a computed version
    /// is always above the previous one.
    #[test]
    fn next_is_above_the_previous_version(
        major in 0u64..4, minor in 0u64..4, patch in 0u64..4,
        pre in proptest::option::of(1u64..4),
        kinds in proptest::collection::vec(0usize..6, 0..6),
        label in proptest::option::of(prop_oneof![Just("rc"), Just("beta")]),
        zero_major in any::<bool>(), zero_minor in any::<bool>(),
    ) {
        let mut prev = Version::new(major, minor, patch);
        if let Some(n) = pre {
            prev.pre = semver::Prerelease::new(&format!("rc.{n}")).unwrap();
        }
        let all = ["feat: a", "fix: b", "perf: c", "chore: d", "feat!: e", "Plain message"];
        let commits: Vec<&str> = kinds.iter().map(|k| all[*k]).collect();
        let rules = Rules { zero_major_bumps_minor: zero_major, zero_minor_bumps_patch: zero_minor, ..Rules::default() };
        let existing = [prev.clone()];
        if let Ok(n) = next(Some(&prev), &msgs(&commits), &rules, label, &existing) {
            prop_assert!(n.version > prev, "{} after {}", n.version, prev);
            prop_assert!(!existing.contains(&n.version));
        }
    }
}
