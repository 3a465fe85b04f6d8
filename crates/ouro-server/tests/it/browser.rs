//! The web UI in a real browser: headless Chromium driven through chromedriver (WebDriver) with
//! fantoccini, against the real server. It walks a new instance from the setup link to an API
//! token that works, and saves a screenshot of every step under `target/browser-screenshots/`.
//!
//! Needs `/usr/bin/chromedriver` and `/usr/bin/chromium` (Debian packages `chromium-driver` and
//! `chromium`; `OURO_CHROMEDRIVER` and `OURO_CHROMIUM` point elsewhere). When they are missing the
//! test says so loudly and passes, except with `CI=true`, where a missing browser is a failure.
//! SQLite only: the storage suite covers PostgreSQL, and a browser adds nothing there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use ouro_core::Actor;
use ouro_store::projects::{self, ProjectPatch};
use ouro_store::testing::TestDb;
use serde_json::json;

use crate::support::*;

/// Long enough for a cold Chromium on a busy two-core machine; waits end as soon as the element shows.
const WAIT: Duration = Duration::from_secs(30);

/// The browser binaries, or `None` (after the skip message) when this machine has none.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let driver = PathBuf::from(
        std::env::var("OURO_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
    );
    let chromium = PathBuf::from(
        std::env::var("OURO_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let missing: Vec<String> = [&driver, &chromium]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((driver, chromium));
    }
    let msg = format!(
        "browser test needs {} (install the Debian packages chromium-driver and chromium, or set OURO_CHROMEDRIVER / OURO_CHROMIUM)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|c| c == "true") {
        panic!("CI=true and {msg}");
    }
    // Straight to stderr: the test harness hides eprintln! output of passing tests, and a skip
    // must not go unnoticed.
    use std::io::Write;
    let bar = "*".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n*** SKIPPING the browser test: {msg} ***\n{bar}\n"
    );
    None
}

/// A chromedriver child process. Dropping it (also while unwinding from a failed assertion) ends
/// the browser session, which makes chromedriver quit Chromium, then kills chromedriver: a
/// killed chromedriver alone would leave Chromium running.
struct Driver {
    child: Child,
    port: u16,
    url: String,
    dir: tempfile::TempDir,
    /// The WebDriver session to end on drop, once one is open.
    session: std::sync::Mutex<Option<String>>,
}

impl Driver {
    async fn start(binary: &Path) -> Driver {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut driver = Driver {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            session: std::sync::Mutex::new(None),
        };
        driver.wait_ready().await;
        driver
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited with {status}: {}", self.log());
            }
            if let Ok(r) = http.get(format!("{}/status", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer within {WAIT:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    fn profile_dir(&self) -> PathBuf {
        self.dir.path().join("profile")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let session = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(id) = session {
            // Plain blocking HTTP: Drop cannot await, and the runtime may be unwinding.
            delete_session(self.port, &id);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DELETE /session/{id}`: chromedriver closes the browser and answers when it is gone.
fn delete_session(port: u16, id: &str) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if conn.write_all(request.as_bytes()).is_ok() {
        let _ = conn.read_to_end(&mut Vec::new());
    }
}

/// Where screenshots go: `<target dir>/browser-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => workspace.join(t),
        None => workspace.join("target"),
    };
    let dir = target.join("browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The browser session plus the small vocabulary the walk is written in.
struct Browser {
    c: Client,
    base: String,
    shots: PathBuf,
    step: usize,
}

impl Browser {
    async fn open(driver: &Driver, chromium: &Path, base: &str) -> Browser {
        let profile = driver.profile_dir();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            "--window-size=1280,900",
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium.display().to_string(), "args": args}),
        );
        // Plain HTTP: chromedriver is on localhost, and the rustls builder would need a process-wide
        // crypto provider choice (the dependency graph enables two).
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let c = builder
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session: {e}\n{}", driver.log()));
        *driver.session.lock().unwrap() = c.session_id().await.unwrap();
        Browser {
            c,
            base: base.to_string(),
            shots: screenshot_dir(),
            step: 0,
        }
    }

    async fn goto(&self, path_or_url: &str) {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        self.c
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Waits until `css` is on the page; on timeout fails with the URL and the page's text.
    async fn find(&self, css: &str) -> Element {
        match self
            .c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let url = self
                    .c
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                let text = match self.c.find(Locator::Css("body")).await {
                    Ok(b) => b.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("no {css:?} within {WAIT:?} on {url}: {e}\npage text:\n{text}");
            }
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css:?}: {e}"));
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn path(&self) -> String {
        let u = self.c.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Like [`Browser::shot`], but the whole page rather than the window, for long pages: the
    /// window grows to the page's height for the picture and goes back to its size after.
    async fn shot_full(&mut self, name: &str) {
        let dims = self
            .c
            .execute(
                "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await
            .unwrap();
        let height = dims[0].as_u64().unwrap_or(900) + dims[1].as_u64().unwrap_or(0);
        self.c
            .set_window_size(1280, height.max(900) as u32)
            .await
            .unwrap();
        self.shot(name).await;
        self.c.set_window_size(1280, 900).await.unwrap();
    }

    /// Saves the window as `NN-name.png`, numbered in walk order.
    async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.c.screenshot().await.unwrap();
        let file = self.shots.join(format!("{:02}-{name}.png", self.step));
        std::fs::write(&file, png).unwrap();
        eprintln!("screenshot: {}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_walk_from_setup_link_to_working_token() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
        return;
    };
    let s = TestServer::start_with(
        &TestDb::Sqlite,
        Options {
            with_admin: false,
            ..Default::default()
        },
    )
    .await;
    let setup_url = s
        .setup_url
        .clone()
        .expect("a fresh instance prints a setup link");
    let driver = Driver::start(&driver_bin).await;
    let mut b = Browser::open(&driver, &chromium, &s.base).await;
    // Pictures of an earlier run would mix with this one's.
    for f in std::fs::read_dir(&b.shots).unwrap().flatten() {
        if f.path().extension().is_some_and(|e| e == "png") {
            let _ = std::fs::remove_file(f.path());
        }
    }

    // First start: the setup link creates the administrator and signs them in.
    b.goto(&setup_url).await;
    b.find("#create-admin").await;
    b.shot("setup").await;
    b.fill("#name", "ada").await;
    b.fill("#password", "correct-horse-battery").await;
    b.click("#create-admin").await;
    b.find("#new-project").await;
    assert_eq!(b.text(".account .who").await, "ada");
    b.shot("projects-empty").await;

    // Sign out, then a wrong password is refused with a message on the sign-in page.
    b.click("#sign-out").await;
    b.find("#sign-in").await;
    b.fill("#name", "ada").await;
    b.fill("#password", "not-the-password").await;
    b.click("#sign-in").await;
    let error = b.text("#form-error").await;
    assert!(
        error.contains("not right"),
        "sign-in error says what went wrong: {error:?}"
    );
    b.shot("sign-in-wrong-password").await;

    // The right password signs in.
    b.fill("#name", "ada").await;
    b.fill("#password", "correct-horse-battery").await;
    b.click("#sign-in").await;
    b.find("#new-project").await;

    // Create a project.
    b.click("#new-project").await;
    b.find("#create-project").await;
    b.fill("#name", "Payments API").await;
    b.fill("#slug", "payments").await;
    b.fill("#description", "Takes the money and keeps the books.")
        .await;
    b.shot("project-new").await;
    b.click("#create-project").await;
    assert_eq!(b.text("#project-title").await, "Payments API");
    assert_eq!(b.path().await, "/projects/payments");
    b.shot("project-overview").await;

    // The administrator creates an account for a teammate and invites her to the project.
    b.click(".topnav a[href='/admin/users']").await;
    b.find("#create-user").await;
    b.fill("#user-name", "grace").await;
    b.fill("#user-password", "grace-password-1").await;
    b.click("#create-user").await;
    b.find("#user-list tr[data-user=grace]").await;
    assert!(b.text(".flash").await.contains("grace"));
    b.shot("admin-users").await;
    b.goto("/projects/payments/members").await;
    b.fill("#add-user", "grace").await;
    b.find("#add-role")
        .await
        .select_by_value("developer")
        .await
        .unwrap();
    b.click("#add-member").await;
    b.find("#member-list tr[data-user=grace]").await;
    assert!(
        b.text(".flash")
            .await
            .contains("grace was added as developer")
    );
    b.shot("project-members").await;

    // Settings, with the danger zone for the owner.
    b.goto("/projects/payments/settings").await;
    b.find("#settings-form").await;
    b.find("#delete-project").await;
    b.shot_full("project-settings").await;

    // Someone else saves while the form is open: saving shows the conflict and the current values.
    let elsewhere = ProjectPatch {
        description: Some("Changed elsewhere.".into()),
        ..Default::default()
    };
    projects::update(
        &s.state.store,
        &Actor::System("test"),
        "payments",
        None,
        elsewhere,
    )
    .await
    .unwrap();
    b.fill("#name", "Payments").await;
    b.click("#save-settings").await;
    assert!(b.text("#conflict").await.contains("were not saved"));
    let description = b.find("#description").await.prop("value").await.unwrap();
    assert_eq!(description.as_deref(), Some("Changed elsewhere."));
    b.shot("project-settings-conflict").await;
    b.fill("#name", "Payments").await;
    b.click("#save-settings").await;
    assert_eq!(b.text(".flash").await, "Settings saved.");
    assert_eq!(b.text(".projectnav-title a").await, "Payments");

    // Create a read-only token; its secret is shown once and works against the API.
    b.goto("/account/tokens").await;
    b.find("#create-token").await;
    b.shot("tokens-empty").await;
    // A mistyped expiry comes back with the message next to the field and nothing created.
    b.fill("#token-name", "browser test").await;
    b.fill("#expires-days", "soon").await;
    b.click("#create-token").await;
    assert!(b.text("#expires-error").await.contains("whole number"));
    let described = b
        .find("#expires-days")
        .await
        .attr("aria-describedby")
        .await
        .unwrap();
    assert!(described.unwrap_or_default().contains("expires-error"));
    b.shot("token-field-error").await;
    b.find("#expires-days").await.clear().await.unwrap();
    b.click("input[name=scope][value=read_api]").await;
    b.click("#create-token").await;
    let secret = b.text("#new-token").await.trim().to_string();
    assert!(secret.starts_with("ouro_"), "a token secret: {secret:?}");
    assert!(
        b.text("#token-usage")
            .await
            .contains("Authorization: Bearer")
    );
    assert!(b.text("#token-list").await.contains("browser test"));
    b.shot_full("token-created").await;
    let r = reqwest::Client::new()
        .get(s.url("/api/v1/projects/payments"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new token reads the project");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["slug"], "payments");

    // Signed out, a page that needs an account sends the visitor to sign in.
    b.click("#sign-out").await;
    b.find("#sign-in").await;
    assert_eq!(b.text(".flash").await, "You are signed out.");
    b.goto("/projects/new").await;
    b.find("#sign-in").await;
    let path = b.path().await;
    assert!(
        path.starts_with("/login?next="),
        "redirected to sign in: {path}"
    );
    assert!(
        path.contains("projects%2Fnew") || path.contains("projects/new"),
        "comes back afterwards: {path}"
    );
    b.shot("signed-out-redirect").await;

    b.c.close().await.unwrap();
    driver.session.lock().unwrap().take();
    drop(driver);
    s.stop().await;
}

/// Plan in a real browser: create a story in the backlog, drag it across board columns (the
/// board's own script posts the transition; a refused drop shows the allowed states), plan and
/// start a sprint, see the burndown chart, and import a small CSV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_plan_story_board_sprint_and_import() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
        return;
    };
    let s = TestServer::start(&TestDb::Sqlite).await;
    let (st, body) = s
        .admin(
            reqwest::Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "shop", "name": "Shop"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let driver = Driver::start(&driver_bin).await;
    let mut b = Browser::open(&driver, &chromium, &s.base).await;

    b.goto("/login").await;
    b.fill("#name", "admin").await;
    b.fill("#password", "admin-password").await;
    b.click("#sign-in").await;
    b.find("#new-project").await;

    // A story from the backlog form.
    b.goto("/projects/shop/plan").await;
    b.find("#new-type")
        .await
        .select_by_value("story")
        .await
        .unwrap();
    b.fill("#new-title", "Pay with a saved card").await;
    b.click("#create-item").await;
    assert_eq!(b.text("#item-title").await, "Pay with a saved card");
    let key = b.path().await.rsplit('/').next().unwrap().to_string();
    assert_eq!(key, "SHOP-1");
    b.shot("plan-item").await;

    // Drag the card from New to Ready, then try a move the workflow refuses.
    b.goto("/projects/shop/plan/board").await;
    b.find("#card-SHOP-1").await;
    let drag = r#"
        const [key, state] = arguments;
        const card = document.getElementById('card-' + key);
        const col = document.querySelector('.board-col[data-state="' + state + '"]');
        const dt = new DataTransfer();
        card.dispatchEvent(new DragEvent('dragstart', {bubbles: true, dataTransfer: dt}));
        col.dispatchEvent(new DragEvent('dragover', {bubbles: true, cancelable: true, dataTransfer: dt}));
        col.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: dt}));
        card.dispatchEvent(new DragEvent('dragend', {bubbles: true, dataTransfer: dt}));
    "#;
    b.c.execute(drag, vec![json!("SHOP-1"), json!("Ready")])
        .await
        .unwrap();
    b.find(".board-col[data-state='Ready'] #card-SHOP-1").await;
    b.shot("plan-board-after-drag").await;
    b.c.execute(drag, vec![json!("SHOP-1"), json!("Done")])
        .await
        .unwrap();
    b.find(".board-col[data-state='Done'] #card-SHOP-1").await;
    // From Done the default workflow only reopens to Ready.
    b.c.execute(drag, vec![json!("SHOP-1"), json!("In progress")])
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let refusal = loop {
        let t = b.text("#board-error").await;
        if !t.is_empty() || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refusal.contains("Allowed: Ready"),
        "a refused drop says what is allowed: {refusal:?}"
    );
    b.shot("plan-board-refused").await;
    let (_, item) = s
        .admin(
            reqwest::Method::GET,
            "/api/v1/projects/shop/items/SHOP-1",
            None,
        )
        .await;
    assert_eq!(item["state"], "Done");
    b.c.execute(drag, vec![json!("SHOP-1"), json!("Ready")])
        .await
        .unwrap();
    b.find(".board-col[data-state='Ready'] #card-SHOP-1").await;

    // Plan a sprint with the story and start it; the burndown renders.
    b.goto("/projects/shop/plan/sprints").await;
    b.fill("#new-sprint #name", "Sprint 1").await;
    b.fill("#new-sprint #capacity", "10").await;
    b.click("#new-sprint button[type=submit]").await;
    b.find("#backlog-items").await;
    b.click("#backlog-items button[aria-label='Add SHOP-1 to the sprint']")
        .await;
    b.find("#sprint-items button[aria-label='Remove SHOP-1 from the sprint']")
        .await;
    b.click(".actions button.primary").await;
    b.find(".sprint-active").await;
    let chart = b.text(".chart-box[aria-label='Burndown']").await;
    assert!(
        chart.to_lowercase().contains("burndown"),
        "the burndown chart has its title: {chart:?}"
    );
    b.find(".chart-box[aria-label='Burndown'] svg polyline")
        .await;
    b.shot_full("plan-sprint-started").await;

    // Import two items from CSV: preview first, then import.
    b.goto("/projects/shop/plan/import").await;
    b.fill(
        "#import-csv",
        "Summary,Issue Type,Priority\nRefund to card,Story,High\nReceipt typo,Bug,Low\n",
    )
    .await;
    b.click("#import-preview").await;
    assert!(b.text("#preview").await.contains("Receipt typo"));
    b.shot("plan-import-preview").await;
    b.click("#import-run").await;
    assert!(b.text(".flash").await.contains("Imported 2"));
    assert!(b.text("body").await.contains("Refund to card"));

    b.c.close().await.unwrap();
    driver.session.lock().unwrap().take();
    drop(driver);
    s.stop().await;
}

/// The build pages live: a pushed two-job pipeline (`b` needs `a`, which sleeps) goes green on
/// the run page without a reload (htmx polls the job graph), the log page of `a` shows its marker
/// line, and the commit page lists the run as a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_run_page_goes_green_live_and_shows_the_log() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
        return;
    };
    let s = TestServer::start_with(
        &TestDb::Sqlite,
        Options {
            tweak: |st: &mut ouro_server::Settings| st.runner_slots = 2,
            ..Options::default()
        },
    )
    .await;
    s.demo_project().await;
    let driver = Driver::start(&driver_bin).await;
    let mut b = Browser::open(&driver, &chromium, &s.base).await;
    b.goto("/login").await;
    b.fill("#name", "admin").await;
    b.fill("#password", "admin-password").await;
    b.click("#sign-in").await;
    b.find("#new-project").await;

    let (git, work, _) = crate::code_hosting::app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    let pipeline = "name: CI
on:
  push:
    branches: [main]
jobs:
  a:
    steps:
      - run: sleep 2; echo marker-of-job-a
  b:
    needs: a
    steps:
      - run: echo b-done
";
    let sha = git
        .commit(&work, ".ouro/pipelines/ci.yml", pipeline, "CI")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (st, _) = s
            .admin(
                reqwest::Method::GET,
                "/api/v1/projects/demo/pipelines/1",
                None,
            )
            .await;
        if st == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no run 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The run page, opened while the run is active; a marker on the window tells a reload apart.
    b.goto("/projects/demo/pipelines/1").await;
    b.find("#jobs li[data-job='a']").await;
    b.c.execute("window.ouroNoReload = true; return true;", vec![])
        .await
        .unwrap();
    b.shot("run-live").await;
    b.find("#jobs li[data-job='b'].job-success").await;
    b.find("#jobs li[data-job='a'].job-success").await;
    b.find("#run-status.run-success").await;
    assert_eq!(b.text("#run-status").await, "success");
    let same_page =
        b.c.execute("return window.ouroNoReload === true;", vec![])
            .await
            .unwrap();
    assert_eq!(
        same_page,
        json!(true),
        "the page went green without a reload"
    );
    b.shot("run-green").await;

    // Job a's log page has its marker line.
    b.click("#jobs li[data-job='a'] a.run-job-name").await;
    b.find("#job-status.run-success").await;
    let log = b.text("#log").await;
    assert!(log.contains("marker-of-job-a"), "{log}");
    b.shot("job-a-log").await;

    // The commit page lists the run.
    b.goto(&format!("/projects/demo/code/app/commit/{sha}"))
        .await;
    b.find("#runs tr[data-run='1'][data-status='success']")
        .await;
    b.shot("commit-runs").await;

    b.c.close().await.unwrap();
    driver.session.lock().unwrap().take();
    drop(driver);
    s.stop().await;
}

/// The Test issue's browser check: a change request whose pipeline has a new failing test and
/// low diff coverage (a `min-diff-coverage: 80` gate, 50% covered) shows both on its page, marks
/// the uncovered changed line in the diff, and cannot merge: the merge button is disabled and the
/// page names the failing quality-gate status the merge rules require.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_cr_with_a_new_failure_and_low_diff_coverage_cannot_merge() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
        return;
    };
    let s = TestServer::start_with(
        &TestDb::Sqlite,
        Options {
            tweak: |st: &mut ouro_server::Settings| st.runner_slots = 2,
            ..Options::default()
        },
    )
    .await;
    s.demo_project().await;
    let (git, work, _) = crate::code_hosting::app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    std::fs::create_dir_all(work.join("src")).unwrap();
    git.commit(
        &work,
        ".ouro/pipelines/cr.yml",
        crate::test_reports::CR_PIPELINE,
        "CI",
    )
    .await;
    git.commit(&work, "src/lib.rs", "one\ntwo\n", "Lib").await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
    let head = git
        .commit(&work, "src/lib.rs", "one\ntwo\nthree\nfour\n", "More")
        .await;
    git.run(&work, &["push", "-q", "origin", "feature"]).await;
    let repo = "/api/v1/projects/demo/repos/app";
    let (st, b) = s
        .admin(
            reqwest::Method::PUT,
            &format!("{repo}/merge-rules"),
            Some(json!({"merge_method": "merge", "required_approvals": 0,
                        "required_checks": ["ouro/quality/check"],
                        "dismiss_stale_approvals": true})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, cr) = s
        .admin(
            reqwest::Method::POST,
            &format!("{repo}/change-requests"),
            Some(json!({"source": "feature", "target": "main", "title": "More"})),
        )
        .await;
    assert_eq!(st, 201, "{cr}");
    // The gate's failing status on the head: the run ended and its reports were ingested.
    eventually(&s, &format!("{repo}/commits/{head}/statuses"), |b| {
        b.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["name"] == "ouro/quality/check" && x["state"] == "failure")
        })
    })
    .await;

    let driver = Driver::start(&driver_bin).await;
    let mut b = Browser::open(&driver, &chromium, &s.base).await;
    b.goto("/login").await;
    b.fill("#name", "admin").await;
    b.fill("#password", "admin-password").await;
    b.click("#sign-in").await;
    b.find("#new-project").await;

    b.goto("/projects/demo/code/app/change-requests/1").await;
    // The test summary (loaded by htmx): the new failure and the diff coverage.
    let new = b.text("#cr-new-failures").await;
    assert_eq!(new, "1 new");
    let summary = b.text("#cr-tests-summary").await;
    assert!(summary.contains("c/t1"), "{summary}");
    let diff_cov = b.text("#cr-diff-coverage").await;
    assert!(
        diff_cov.contains("50% of the changed lines (1 of 2)"),
        "{diff_cov}"
    );
    // The diff marks the uncovered changed line (4) and says which run measured it.
    let legend = b.text("#cov-legend").await;
    assert!(legend.contains("Not covered by tests in run #"), "{legend}");
    let miss = b.text("#changes tr.cov-miss td.code pre").await;
    assert_eq!(miss.trim(), "+four");
    // It cannot merge: the button is disabled and the page says why.
    let merge = b.find("#merge").await;
    assert_eq!(
        merge.attr("disabled").await.unwrap().as_deref(),
        Some("true")
    );
    assert_eq!(b.text("#gate-summary").await, "blocked");
    let why = b.text("#merge-blocked").await;
    assert!(why.contains("ouro/quality/check"), "{why}");
    b.shot_full("cr-new-failure-low-diff-coverage-blocked")
        .await;

    b.c.close().await.unwrap();
    driver.session.lock().unwrap().take();
    drop(driver);
    s.stop().await;
}

/// Issue 8's walk: promote a release to staging in the browser, watch the environment page
/// switch to it (blue-green), roll back with the button and see the previous version live.
#[tokio::test]
async fn browser_promote_to_staging_watch_the_switch_and_roll_back() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
        return;
    };
    let s = TestServer::start(&TestDb::Sqlite).await;
    let project = s.demo_project().await;
    let (git, work, _) = crate::code_hosting::app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro")).unwrap();
    git.commit(
        &work,
        ".ouro/services.yml",
        crate::deploy::SERVICES,
        "Services",
    )
    .await;
    let sha = git
        .commit(
            &work,
            ".ouro/environments.yml",
            "environments:\n  staging: {}\n",
            "Path",
        )
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    let app = |v| crate::deploy::app(v, false);
    crate::deploy::release(&s, project.id, "1.0.0", &sha, &app("1.0.0")).await;
    crate::deploy::release(&s, project.id, "1.1.0", &sha, &app("1.1.0")).await;
    let cleanup = crate::deploy::Cleanup(
        s.state.clone(),
        vec![
            ("demo/staging".into(), "1.0.0".into()),
            ("demo/staging".into(), "1.1.0".into()),
        ],
    );
    let d = crate::deploy::deploy(&s, "staging", "1.0.0").await;
    assert_eq!(d["state"], "succeeded", "{d}");

    let driver = Driver::start(&driver_bin).await;
    let mut b = Browser::open(&driver, &chromium, &s.base).await;
    b.goto("/login").await;
    b.fill("#name", "admin").await;
    b.fill("#password", "admin-password").await;
    b.click("#sign-in").await;
    b.find("#new-project").await;

    // Promote 1.1.0: no gates, so it is approved at once and Deploy takes it from there.
    b.goto("/projects/demo/releases/1.1.0/promotions").await;
    b.click("#request-staging").await;
    b.find(".flash").await;
    b.goto("/projects/demo/environments/staging").await;
    b.shot_full("deploy-environment-switching").await;
    wait_live(&b, "1.1.0").await;
    assert_eq!(b.text("#previous-version").await, "1.0.0");
    let traffic = b.text("#env-panel .traffic").await;
    assert_eq!(traffic, "1.1.0 100%");
    b.shot_full("deploy-environment-after-switch").await;

    b.click("#rollback-button").await;
    let flash = b.text(".flash").await;
    assert!(flash.contains("Rolling back staging to 1.0.0"), "{flash}");
    wait_live(&b, "1.0.0").await;
    let rows = b.text("#deployments").await;
    assert!(rows.contains("rollback"), "{rows}");
    b.shot_full("deploy-environment-rolled-back").await;

    b.c.close().await.unwrap();
    driver.session.lock().unwrap().take();
    drop(driver);
    cleanup.run().await;
    s.stop().await;
}

/// Reloads the staging environment page until its live version is `want`.
async fn wait_live(b: &Browser, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        b.goto("/projects/demo/environments/staging").await;
        let text = b.text("#live-version").await;
        if text == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "live version stays {text}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the page's flash message contains `want`: right after a click the old page (and
/// its flash) may still be shown while the form posts, and an element read then may go stale.
async fn flash_with(b: &Browser, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = match b.c.find(Locator::Css(".flash")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if shown.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no flash with {want:?} within {WAIT:?}; it says {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs in as `name` on the sign-in page (after signing out whoever is signed in).
async fn sign_in(b: &Browser, name: &str, password: &str) {
    b.goto("/login").await;
    b.fill("#name", name).await;
    b.fill("#password", password).await;
    b.click("#sign-in").await;
    b.find("#new-project").await;
    assert_eq!(b.text(".account .who").await, name);
}

/// Issue 7's walk: a pushed pipeline goes green with an artifact; on the run page a maintainer
/// (publishing needs that role) clicks "Create release", edits the draft's notes, publishes and
/// requests staging, which needs one approval from another maintainer (no self-approval); a
/// second maintainer approves it in the browser. The API then shows the published release with
/// the edited notes and the approved promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_create_release_from_a_green_run_edit_notes_promote_and_approve() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
        return;
    };
    let s = TestServer::with_runner(&TestDb::Sqlite).await;
    s.demo_project().await;
    for user in ["rel", "mia"] {
        crate::code_hosting::member(&s, user, "maintainer").await;
    }
    let (git, work, _) = crate::code_hosting::app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    let pipeline = crate::release_ui::PIPELINE;
    git.commit(&work, ".ouro/pipelines/ci.yml", pipeline, "chore: CI")
        .await;
    git.commit(
        &work,
        ".ouro/environments.yml",
        "environments:\n  staging:\n    approvals: {required: 1, from: [maintainers], no-self-approval: true}\n",
        "chore: promotion path",
    )
    .await;
    git.commit(&work, "lib.rs", "pub fn pay() {}\n", "feat: pay by card")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    let run = run_finished(&s, 1).await;
    assert_eq!(run["status"], "success", "{run}");

    let driver = Driver::start(&driver_bin).await;
    let mut b = Browser::open(&driver, &chromium, &s.base).await;
    sign_in(&b, "rel", "password-123").await;

    // The green run offers "Create release"; the draft's page opens.
    b.goto("/projects/demo/pipelines/1").await;
    b.find("#run-status.run-success").await;
    b.shot("release-green-run").await;
    b.click("#create-release-button").await;
    b.find("#notes-form").await;
    assert_eq!(b.path().await, "/projects/demo/releases/0.1.0");
    assert_eq!(b.text("#release-state").await, "draft");
    assert!(
        b.text(".flash")
            .await
            .contains("Draft release 0.1.0 created")
    );
    assert!(b.text("#notes-html").await.contains("pay by card"));

    // Edit the notes and save; the rendered notes show the edit.
    b.fill(
        "#notes-form textarea[name=notes]",
        "## 0.1.0\n\nCard payments, edited in the browser.\n",
    )
    .await;
    b.click("#save-notes").await;
    flash_with(&b, "The notes were saved.").await;
    assert!(
        b.text("#notes-html")
            .await
            .contains("Card payments, edited in the browser.")
    );
    b.shot_full("release-draft-edited").await;

    // Publish, then request staging from the release's environments.
    b.click("#publish-button").await;
    b.find("#withdraw-form").await;
    assert_eq!(b.text("#release-state").await, "published");
    b.click("#environments-link").await;
    b.click("#request-staging").await;
    flash_with(&b, "Promotion to staging requested.").await;
    assert!(
        b.text("#env-staging .gates")
            .await
            .contains("0 of 1 approvals from maintainers")
    );
    b.shot_full("release-staging-requested").await;

    // The requester may not approve their own request: refused with the reason, still requested.
    b.fill("#decide-staging input[name=comment]", "mine").await;
    b.click("#approve-staging").await;
    flash_with(&b, "forbids self-approval").await;
    b.find("#env-staging.env-requested").await;

    b.click("#sign-out").await;
    b.find("#sign-in").await;
    sign_in(&b, "mia", "password-123").await;
    b.goto("/projects/demo/releases/0.1.0/promotions").await;
    b.fill("#decide-staging input[name=comment]", "notes read, ship it")
        .await;
    b.click("#approve-staging").await;
    flash_with(&b, "the promotion to staging is approved").await;
    b.find("#env-staging.env-approved").await;
    assert!(b.text("#env-staging").await.contains("notes read, ship it"));
    b.shot_full("release-staging-approved").await;

    // The settings pages say where the path in effect comes from.
    b.goto("/projects/demo/settings/environments").await;
    let source = b.text("#effect-source").await;
    assert!(
        source.contains(".ouro/environments.yml at its commit"),
        "{source}"
    );
    b.find("#effect-path tr[data-env='staging']").await;
    b.shot_full("release-promotion-path-settings").await;
    b.goto("/projects/demo/settings/release").await;
    b.find("#save-release-settings").await;
    b.shot_full("release-settings").await;

    // The API agrees: published with the edited notes, staging approved by mia.
    let (_, rel) = s
        .admin(
            reqwest::Method::GET,
            "/api/v1/projects/demo/releases/0.1.0",
            None,
        )
        .await;
    assert_eq!(rel["state"], "published", "{rel}");
    assert_eq!(rel["run"], 1, "{rel}");
    assert_eq!(
        rel["notes"], "## 0.1.0\n\nCard payments, edited in the browser.\n",
        "{rel}"
    );
    assert_eq!(rel["artifacts"][0]["path"], "dist/app.txt", "{rel}");
    let (_, promos) = s
        .admin(
            reqwest::Method::GET,
            "/api/v1/projects/demo/releases/0.1.0/promotions",
            None,
        )
        .await;
    let staging = &promos["environments"][0];
    assert_eq!(staging["environment"]["name"], "staging", "{promos}");
    assert_eq!(staging["state"], "approved", "{promos}");
    assert_eq!(staging["promotion"]["requested_by"], "rel", "{promos}");
    assert_eq!(
        staging["promotion"]["approvals"][0]["user"], "mia",
        "{promos}"
    );

    b.c.close().await.unwrap();
    driver.session.lock().unwrap().take();
    drop(driver);
    s.stop().await;
}
