use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError, Role};
use ouro_store::events::{EventFilter, Visibility};
use ouro_store::projects::{ProjectPatch, Visibility as PV};
use ouro_store::testing::{backends, open_store};
use ouro_store::{
    Migration, PLATFORM_MIGRATIONS, PageReq, Store, StoreError, accounts, projects, q,
};
use serde_json::json;

fn code(e: StoreError) -> ErrorCode {
    OuroError::from(e).code
}

#[tokio::test]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused_untouched() {
    for db in backends() {
        let env = open_store(&db).await;
        env.store.close().await;
        // Opening again applies nothing and works.
        let again = Store::open(&env.url, PLATFORM_MIGRATIONS).await.unwrap();
        let n = q("SELECT COUNT(*) AS n FROM ouro_migrations")
            .fetch_one(&mut again.read().await.unwrap())
            .await
            .unwrap();
        assert_eq!(
            n.i64("n").unwrap(),
            PLATFORM_MIGRATIONS.len() as i64,
            "{}",
            db.name()
        );
        again.close().await;

        // A binary that knows one migration more applies it ...
        let mut newer = PLATFORM_MIGRATIONS.to_vec();
        let next = PLATFORM_MIGRATIONS
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0)
            + 1;
        newer.push(Migration {
            component: "platform",
            version: next,
            name: "extra",
            sqlite: "CREATE TABLE extra (id BIGINT)",
            postgres: "CREATE TABLE extra (id BIGINT)",
        });
        Store::open(&env.url, &newer).await.unwrap().close().await;
        // ... and the older binary then refuses to start, naming the problem, changing nothing.
        let err = Store::open(&env.url, PLATFORM_MIGRATIONS)
            .await
            .err()
            .expect("must refuse")
            .to_string();
        assert!(
            err.contains("newer than this binary") && err.contains(&format!("platform v{next}")),
            "{}: {err}",
            db.name()
        );

        // An edited released migration is refused too.
        let mut edited = newer.clone();
        let last = edited.len() - 1;
        edited[last].sqlite = "CREATE TABLE extra (id BIGINT, x TEXT)";
        edited[last].postgres = "CREATE TABLE extra (id BIGINT, x TEXT)";
        let err = Store::open(&env.url, &edited)
            .await
            .err()
            .expect("must refuse")
            .to_string();
        assert!(err.contains("never be edited"), "{}: {err}", db.name());
    }
}

#[tokio::test]
async fn users_tokens_and_sessions() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        let alice = accounts::create_user(s, &Actor::System("test"), "alice", "password1", true)
            .await
            .unwrap();
        assert_eq!(
            code(
                accounts::create_user(s, &Actor::System("test"), "alice", "password1", false)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::UserNameTaken
        );
        assert_eq!(
            code(
                accounts::create_user(s, &Actor::System("test"), "Bad Name", "password1", false)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::InvalidUserName
        );
        assert_eq!(
            code(
                accounts::create_user(s, &Actor::System("test"), "bob", "short", false)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::InvalidPassword
        );
        assert!(
            accounts::check_password(s, "alice", "password1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            accounts::check_password(s, "alice", "nope-nope")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            accounts::check_password(s, "nobody", "password1")
                .await
                .unwrap()
                .is_none()
        );

        let (tok, secret) = accounts::create_token(
            s,
            &alice.actor(),
            &alice,
            "ci",
            &["read_api".into()],
            Some(30),
        )
        .await
        .unwrap();
        let (u, scopes) = accounts::authenticate_token(s, &secret)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.name.as_str(), scopes),
            ("alice", vec!["read_api".to_string()])
        );
        let listed = accounts::list_tokens(&mut s.read().await.unwrap(), alice.id)
            .await
            .unwrap();
        assert!(
            listed[0].last_used_at.is_some(),
            "{}: use is recorded",
            db.name()
        );
        assert!(
            accounts::authenticate_token(s, "ouro_wrong")
                .await
                .unwrap()
                .is_none()
        );
        accounts::revoke_token(s, &alice.actor(), &alice, tok.id)
            .await
            .unwrap();
        assert!(
            accounts::authenticate_token(s, &secret)
                .await
                .unwrap()
                .is_none(),
            "revoked"
        );
        assert_eq!(
            code(
                accounts::revoke_token(s, &alice.actor(), &alice, tok.id)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::TokenNotFound
        );
        assert_eq!(
            code(
                accounts::create_token(s, &alice.actor(), &alice, "x", &["root".into()], None)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::ValidationFailed
        );

        // An expired token is refused.
        let (t2, secret2) =
            accounts::create_token(s, &alice.actor(), &alice, "old", &["api".into()], Some(1))
                .await
                .unwrap();
        let mut tx = s.begin().await.unwrap();
        q("UPDATE api_tokens SET expires_at = 1 WHERE id = $1")
            .bind(t2.id)
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(
            accounts::authenticate_token(s, &secret2)
                .await
                .unwrap()
                .is_none(),
            "expired"
        );

        let (cookie, csrf) = accounts::create_session(s, &alice, "127.0.0.1")
            .await
            .unwrap();
        let sess = accounts::session(s, &cookie).await.unwrap().unwrap();
        assert_eq!((sess.user.id, sess.csrf), (alice.id, csrf));
        accounts::delete_session(s, &cookie, &alice).await.unwrap();
        assert!(accounts::session(s, &cookie).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn projects_members_visibility_and_optimistic_concurrency() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        let sys = Actor::System("test");
        let alice = accounts::create_user(s, &sys, "alice", "password1", false)
            .await
            .unwrap();
        let bob = accounts::create_user(s, &sys, "bob", "password1", false)
            .await
            .unwrap();
        let p = projects::create(s, &alice, "demo", "Demo", "", PV::Private)
            .await
            .unwrap();
        assert_eq!(
            code(
                projects::create(s, &alice, "demo", "Again", "", PV::Private)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::SlugTaken
        );
        assert_eq!(
            code(
                projects::create(s, &alice, "Bad!", "x", "", PV::Private)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::InvalidSlug
        );

        let mut c = s.read().await.unwrap();
        assert_eq!(
            projects::access(&mut c, "demo", Some(&alice))
                .await
                .unwrap()
                .unwrap()
                .1,
            Role::Owner
        );
        assert!(
            projects::access(&mut c, "demo", Some(&bob))
                .await
                .unwrap()
                .is_none(),
            "private hides"
        );
        assert!(
            projects::access(&mut c, "demo", None)
                .await
                .unwrap()
                .is_none()
        );
        drop(c);

        // Stale version: 409 with the current version.
        let p2 = projects::update(
            s,
            &alice.actor(),
            "demo",
            Some(p.version),
            ProjectPatch {
                name: Some("Demo 2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(p2.version, p.version + 1);
        let e: OuroError = projects::update(
            s,
            &alice.actor(),
            "demo",
            Some(p.version),
            ProjectPatch {
                name: Some("Lost".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err()
        .into();
        assert_eq!(e.code, ErrorCode::StaleVersion);
        assert_eq!(e.details.unwrap()["current_version"], json!(p2.version));

        projects::update(
            s,
            &alice.actor(),
            "demo",
            None,
            ProjectPatch {
                visibility: Some(PV::Internal),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut c = s.read().await.unwrap();
        assert_eq!(
            projects::access(&mut c, "demo", Some(&bob))
                .await
                .unwrap()
                .unwrap()
                .1,
            Role::Viewer,
            "internal"
        );
        assert!(
            projects::access(&mut c, "demo", None)
                .await
                .unwrap()
                .is_none()
        );
        drop(c);

        let p = projects::by_slug(&mut s.read().await.unwrap(), "demo")
            .await
            .unwrap()
            .unwrap();
        projects::set_member(s, &alice.actor(), &p, "bob", Role::Developer)
            .await
            .unwrap();
        projects::set_member(s, &alice.actor(), &p, "bob", Role::Maintainer)
            .await
            .unwrap();
        assert_eq!(
            code(
                projects::set_member(s, &alice.actor(), &p, "alice", Role::Viewer)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::LastOwner
        );
        assert_eq!(
            code(
                projects::remove_member(s, &alice.actor(), &p, "alice")
                    .await
                    .unwrap_err()
            ),
            ErrorCode::LastOwner
        );
        assert_eq!(
            code(
                projects::set_member(s, &alice.actor(), &p, "ghost", Role::Viewer)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::UserNotFound
        );
        let members = projects::members(&mut s.read().await.unwrap(), p.id)
            .await
            .unwrap();
        assert_eq!(
            members
                .iter()
                .map(|m| (m.user.as_str(), m.role))
                .collect::<Vec<_>>(),
            vec![("alice", Role::Owner), ("bob", Role::Maintainer)]
        );
        projects::remove_member(s, &alice.actor(), &p, "bob")
            .await
            .unwrap();

        let page = projects::list_visible(
            &mut s.read().await.unwrap(),
            Some(&alice),
            PageReq::new(0, Some(10)),
            Some("dem"),
        )
        .await
        .unwrap();
        assert_eq!(page.items.len(), 1);

        // The ledger has every change, in order, scoped to the project.
        let evs = ouro_store::events::list(
            &mut s.read().await.unwrap(),
            &Visibility::Projects(vec![p.id]),
            &EventFilter::default(),
            PageReq::new(0, Some(100)),
        )
        .await
        .unwrap();
        let kinds: Vec<&str> = evs.items.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "project.created",
                "member.added",
                "project.updated",
                "project.updated",
                "member.added",
                "member.role_changed",
                "member.removed"
            ],
            "{}",
            db.name()
        );
        projects::delete(s, &alice.actor(), "demo").await.unwrap();
        assert!(
            projects::by_slug(&mut s.read().await.unwrap(), "demo")
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn ledger_sequence_pages_filters_and_cursors() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        let sys = Actor::System("test");
        let mut rx = s.subscribe_seq();
        let mut tx = s.begin().await.unwrap();
        for i in 0..5 {
            tx.append(
                NewEvent::new(ev::PROJECT_UPDATED, &sys, i, json!({"i": i})).in_project(7, "p7"),
            )
            .await
            .unwrap();
        }
        tx.append(NewEvent::new(ev::USER_CREATED, &sys, 1, json!({})))
            .await
            .unwrap();
        // Nothing is visible before commit ...
        let none = ouro_store::events::list(
            &mut s.read().await.unwrap(),
            &Visibility::All,
            &EventFilter::default(),
            PageReq::default(),
        )
        .await
        .unwrap();
        assert!(none.items.is_empty());
        tx.commit().await.unwrap();
        // ... and subscribers learn the newest seq at commit.
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 6);

        // A rolled-back transaction leaves no event.
        let mut tx = s.begin().await.unwrap();
        tx.append(NewEvent::new(ev::USER_CREATED, &sys, 2, json!({})))
            .await
            .unwrap();
        drop(tx);

        let mut c = s.read().await.unwrap();
        let p1 = ouro_store::events::list(
            &mut c,
            &Visibility::All,
            &EventFilter::default(),
            PageReq::new(0, Some(4)),
        )
        .await
        .unwrap();
        assert_eq!(
            p1.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(p1.next_cursor.as_deref(), Some("4"));
        let p2 = ouro_store::events::list(
            &mut c,
            &Visibility::All,
            &EventFilter::default(),
            PageReq::new(4, Some(4)),
        )
        .await
        .unwrap();
        assert_eq!(p2.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(p2.next_cursor, None);
        assert_eq!(p2.items[1].project, None);
        assert_eq!(p2.items[0].project.as_deref(), Some("p7"));

        let only = ouro_store::events::list(
            &mut c,
            &Visibility::All,
            &EventFilter {
                project_id: None,
                kind: Some("user.*".into()),
            },
            PageReq::default(),
        )
        .await
        .unwrap();
        assert_eq!(only.items.len(), 1);
        let hidden = ouro_store::events::list(
            &mut c,
            &Visibility::Projects(vec![8]),
            &EventFilter::default(),
            PageReq::default(),
        )
        .await
        .unwrap();
        assert!(
            hidden.items.is_empty(),
            "other projects' events are invisible"
        );

        assert_eq!(ouro_store::events::cursor(&mut c, "c1").await.unwrap(), 0);
        drop(c);
        let mut tx = s.begin().await.unwrap();
        ouro_store::events::set_cursor(&mut tx, "c1", 4)
            .await
            .unwrap();
        ouro_store::events::set_cursor(&mut tx, "c1", 2)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            ouro_store::events::cursor(&mut s.read().await.unwrap(), "c1")
                .await
                .unwrap(),
            4,
            "cursors never move back"
        );
    }
}

/// Many events at once: one multi-row batch and more (1,203 = two batches of 500, then 128, 64,
/// 8, 2, 1), in order with their fields, after an event appended one by one in the same
/// transaction; subscribers learn the last seq at commit.
#[tokio::test]
async fn append_all_keeps_order_fields_and_the_last_seq() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        let sys = Actor::System("test");
        let mut rx = s.subscribe_seq();
        let mut tx = s.begin().await.unwrap();
        assert_eq!(tx.append_all(&[]).await.unwrap(), None);
        tx.append(NewEvent::new(ev::USER_CREATED, &sys, 0, json!({})))
            .await
            .unwrap();
        let evs: Vec<NewEvent> = (1..=1203)
            .map(|i| {
                NewEvent::new(ev::PROJECT_UPDATED, &sys, i, json!({"i": i})).in_project(7, "p7")
            })
            .collect();
        assert_eq!(tx.append_all(&evs).await.unwrap(), Some(1204));
        tx.commit().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 1204);
        let mut c = s.read().await.unwrap();
        let mut after = 0;
        let mut all = Vec::new();
        loop {
            let page = ouro_store::events::list(
                &mut c,
                &Visibility::All,
                &EventFilter::default(),
                PageReq::new(after, Some(500)),
            )
            .await
            .unwrap();
            let Some(last) = page.items.last() else { break };
            after = last.seq;
            all.extend(page.items);
        }
        assert_eq!(all.len(), 1204);
        assert_eq!(all[0].kind, "user.created");
        for (i, e) in all.iter().enumerate().skip(1) {
            assert_eq!(e.seq, i as i64 + 1);
            assert_eq!(e.subject.id, i.to_string());
            assert_eq!(e.payload, json!({"i": i}));
            assert_eq!(e.project.as_deref(), Some("p7"));
            assert_eq!(e.project_id, Some(7));
            assert_eq!(e.kind, "project.updated");
        }
    }
}

/// Concurrent writers: sequence numbers are unique and commit order equals seq order, so a reader
/// that saw seq N never later finds an event below N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_commit_in_seq_order() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = env.store.clone();
        let mut handles = Vec::new();
        for w in 0..4 {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..25 {
                    let mut tx = s.begin().await.unwrap();
                    tx.append(NewEvent::new(
                        ev::PROJECT_UPDATED,
                        &Actor::System("t"),
                        w * 100 + i,
                        json!({}),
                    ))
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        // A reader polls during the writes; every page must continue exactly where the last ended.
        let reader = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut after = 0;
                let mut seen = 0;
                while seen < 100 {
                    let page = ouro_store::events::list(
                        &mut s.read().await.unwrap(),
                        &Visibility::All,
                        &EventFilter::default(),
                        PageReq::new(after, Some(500)),
                    )
                    .await
                    .unwrap();
                    for e in page.items {
                        assert_eq!(e.seq, after + 1, "gap or reorder after seq {after}");
                        after = e.seq;
                        seen += 1;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        for h in handles {
            h.await.unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .expect("reader finished")
            .unwrap();
    }
}

#[tokio::test]
async fn statements_planned_each_run_are_not_kept_prepared() {
    for db in backends() {
        let env = open_store(&db).await;
        // Both engines run it; only PostgreSQL lets us see what the session keeps prepared.
        let mut tx = env.store.begin().await.unwrap();
        for _ in 0..7 {
            let r = q("SELECT CAST($1 AS BIGINT) + 1 AS each_run")
                .bind(41_i64)
                .plan_each_run()
                .fetch_one(&mut tx)
                .await
                .unwrap();
            assert_eq!(r.i64("each_run").unwrap(), 42, "{}", db.name());
            q("SELECT CAST($1 AS BIGINT) + 2 AS kept")
                .bind(40_i64)
                .fetch_one(&mut tx)
                .await
                .unwrap();
        }
        if env.store.backend() == ouro_store::Backend::Postgres {
            let kept = |needle: &'static str| {
                q("SELECT COUNT(*) AS n FROM pg_prepared_statements WHERE statement LIKE $1")
                    .bind(format!("%{needle}%"))
            };
            let n = kept("AS each_run").fetch_one(&mut tx).await.unwrap();
            assert_eq!(n.i64("n").unwrap(), 0, "planned each run, never kept");
            let n = kept("AS kept").fetch_one(&mut tx).await.unwrap();
            assert_eq!(
                n.i64("n").unwrap(),
                1,
                "the default keeps statements prepared"
            );
        }
    }
}

/// A writer whose first append waits for the ledger lock has drawn no sequence number yet: on
/// PostgreSQL the lock is taken inside the append's INSERT, before `nextval`, so an event the
/// lock holder appends later still gets the lower number and commit order stays seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waiting_for_the_ledger_draws_no_seq() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = env.store.clone();
        let event =
            |id: i64| NewEvent::new(ev::PROJECT_UPDATED, &Actor::System("t"), id, json!({}));
        let mut first = s.begin().await.unwrap();
        let a = first.append(event(1)).await.unwrap();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut tx = s.begin().await.unwrap();
                let seq = tx
                    .append(NewEvent::new(
                        ev::PROJECT_UPDATED,
                        &Actor::System("t"),
                        2,
                        json!({}),
                    ))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                seq
            })
        };
        if db.name() == "postgres" {
            // Wait (with a deadline) until the second writer is queued on the lock.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let waiting = q(
                    "SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' \
                                 AND objid = 7070 AND NOT granted AND database = \
                                 (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .fetch_one(&mut s.read().await.unwrap())
                .await
                .unwrap()
                .i64("n")
                .unwrap();
                if waiting > 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writer never queued"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let b = first.append(event(3)).await.unwrap();
        first.commit().await.unwrap();
        let c = waiter.await.unwrap();
        assert!(a < b && b < c, "{}: {a} {b} {c}", db.name());
        let seqs: Vec<i64> = ouro_store::events::list(
            &mut s.read().await.unwrap(),
            &Visibility::All,
            &EventFilter::default(),
            PageReq::new(0, Some(10)),
        )
        .await
        .unwrap()
        .items
        .iter()
        .map(|e| e.seq)
        .collect();
        assert_eq!(seqs, [a, b, c], "{}: no gap, no reorder", db.name());
    }
}

#[tokio::test]
async fn insert_rows_stores_every_value_exactly_at_any_batch_boundary() {
    use ouro_store::db::Arg;
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        let mut tx = s.begin().await.unwrap();
        q("CREATE TABLE bulk_probe (n BIGINT, t TEXT, b BOOLEAN)")
            .execute(&mut tx)
            .await
            .unwrap();
        // What COPY's text format must escape or could mistake for its own syntax.
        let texts = [
            "plain",
            "tab\there",
            "line\nbreak\r\n",
            "back\\slash \\N \\t",
            "\\N",
            "",
            "ünïcode ✓",
        ];
        let rows = 1_000;
        let mut values = Vec::new();
        let mut want = Vec::new();
        for i in 0..rows {
            let n = if i % 5 == 0 {
                None
            } else {
                Some(i * 1_000_003)
            };
            let t = if i % 7 == 0 {
                None
            } else {
                Some(format!("{}{i}", texts[i as usize % texts.len()]))
            };
            values.push(n.map_or(Arg::NullI64, Arg::I64));
            values.push(t.clone().map_or(Arg::NullText, Arg::Text));
            values.push(Arg::Bool(i % 2 == 0));
            want.push((n, t, i % 2 == 0));
        }
        // 1,000 rows in batches of 300: three full statements and a tail on SQLite.
        let written = ouro_store::insert_rows(&mut tx, "bulk_probe", &["n", "t", "b"], values, 300)
            .await
            .unwrap();
        assert_eq!(written, rows as u64, "{}", db.name());
        let refused = ouro_store::insert_rows(
            &mut tx,
            "bulk_probe",
            &["n", "t", "b"],
            vec![Arg::I64(1), Arg::Text("nul\0".into()), Arg::Bool(true)],
            300,
        )
        .await
        .unwrap_err();
        assert_eq!(code(refused), ErrorCode::ValidationFailed, "{}", db.name());
        tx.commit().await.unwrap();
        let got: Vec<(Option<i64>, Option<String>, bool)> = q("SELECT n, t, b FROM bulk_probe")
            .fetch_all(&mut s.read().await.unwrap())
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.opt_i64("n").unwrap(),
                    r.opt_text("t").unwrap(),
                    r.bool("b").unwrap(),
                )
            })
            .collect();
        // The engines order NULLs differently; compare as sorted lists.
        let (mut got, mut want) = (got, want);
        got.sort();
        want.sort();
        assert_eq!(got, want, "{}", db.name());
    }
}
