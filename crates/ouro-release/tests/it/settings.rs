//! Per-project release settings on both databases: defaults, partial changes, validation of the
//! first version and the notes template, the `release.settings_changed` event.

use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_release::settings::{self, SettingsChange};
use ouro_release::version::Rules;
use ouro_store::testing::backends;
use semver::Version;

fn alice() -> Actor {
    Actor::User {
        id: 1,
        name: "alice".into(),
    }
}

#[tokio::test]
async fn settings_default_change_and_validate() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let url = db.fresh_url(dir.path()).await;
        let (store, project) = crate::support::store_with_project(&url).await;
        let name = db.name();

        let s = settings::get(&mut store.read().await.unwrap(), project)
            .await
            .unwrap();
        assert_eq!(s.rules, Rules::default(), "{name}");
        assert_eq!(s.notes_template, None);
        assert_eq!(s.updated_by, None);

        // A partial change keeps the other fields.
        let s = settings::update(
            &store,
            &alice(),
            project,
            &SettingsChange {
                zero_major_bumps_minor: Some(false),
                initial_version: Some("v1.0.0".into()),
                notes_template: Some(Some("# {{ version }}\n".into())),
                auto_promote: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(!s.rules.zero_major_bumps_minor, "{name}");
        assert!(!s.rules.zero_minor_bumps_patch);
        assert!(s.auto_promote, "{name}");
        assert_eq!(s.rules.initial, Version::new(1, 0, 0));
        let read = settings::get(&mut store.read().await.unwrap(), project)
            .await
            .unwrap();
        assert_eq!(read, s, "{name}: what was stored is read back");
        assert_eq!(read.updated_by.as_deref(), Some("user:alice"));

        let events = ouro_store::events::for_subject(
            &mut store.read().await.unwrap(),
            "project",
            &project.to_string(),
            10,
        )
        .await
        .unwrap();
        let changed: Vec<_> = events
            .iter()
            .filter(|e| e.kind == "release.settings_changed")
            .collect();
        assert_eq!(changed.len(), 1, "{name}");
        assert_eq!(changed[0].project.as_deref(), Some("demo"));
        assert_eq!(
            changed[0].payload["changes"]["zero_major_bumps_minor"],
            false
        );
        assert_eq!(changed[0].payload["changes"]["initial_version"], "1.0.0");
        assert_eq!(changed[0].payload["changes"]["notes_template"], true);
        assert!(
            changed[0].payload["changes"]
                .get("zero_minor_bumps_patch")
                .is_none()
        );

        // Refused changes leave everything as it was.
        let bad: [(SettingsChange, ErrorCode, &str); 3] = [
            (
                SettingsChange {
                    initial_version: Some("one".into()),
                    zero_minor_bumps_patch: Some(true),
                    ..Default::default()
                },
                ErrorCode::ReleaseInvalidVersion,
                "initial_version",
            ),
            (
                SettingsChange {
                    initial_version: Some("1.0.0-rc.1".into()),
                    ..Default::default()
                },
                ErrorCode::ReleaseInvalidVersion,
                "initial_version",
            ),
            (
                SettingsChange {
                    notes_template: Some(Some("{% for c in commits %}".into())),
                    ..Default::default()
                },
                ErrorCode::ReleaseTemplateInvalid,
                "template",
            ),
        ];
        for (change, code, field) in bad {
            let e: OuroError = settings::update(&store, &alice(), project, &change)
                .await
                .unwrap_err()
                .into();
            assert_eq!(e.code, code, "{name}: {change:?}");
            assert_eq!(e.details.unwrap()["field"], field);
        }
        let after = settings::get(&mut store.read().await.unwrap(), project)
            .await
            .unwrap();
        assert_eq!(after, read, "{name}: a refused change stores nothing");

        // Back to the default layout; no change, no event.
        let s = settings::update(
            &store,
            &alice(),
            project,
            &SettingsChange {
                notes_template: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(s.notes_template, None, "{name}");
        settings::update(&store, &alice(), project, &SettingsChange::default())
            .await
            .unwrap();
        let n = ouro_store::events::for_subject(
            &mut store.read().await.unwrap(),
            "project",
            &project.to_string(),
            10,
        )
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "release.settings_changed")
        .count();
        assert_eq!(n, 2, "{name}");
    }
}

#[test]
fn a_null_template_in_json_means_the_default_layout() {
    let c: SettingsChange = serde_json::from_str(r#"{"notes_template": null}"#).unwrap();
    assert_eq!(c.notes_template, Some(None));
    let c: SettingsChange = serde_json::from_str(r#"{"zero_minor_bumps_patch": true}"#).unwrap();
    assert_eq!(c.notes_template, None);
    assert_eq!(c.zero_minor_bumps_patch, Some(true));
}
