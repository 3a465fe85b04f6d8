//! Job logs over HTTP: the job with its sections, the raw log (byte-exact, offset, Range, 416,
//! download), the live SSE stream (chunks with offsets while the test writes the log, sections,
//! `end` after the job finished, resuming with Last-Event-ID, a queued job's stream ending at
//! cancel), the job page (sections, ANSI, escaping, search, truncation), the run page's links
//! and graph fragment, and who may read (viewer yes, non-member 404, unknown job 404).

use std::time::Duration;

use crate::code_hosting::{app_checkout, member};
use crate::support::*;
use ouro_build::logs::{LogConfig, LogWriter};
use ouro_build::runs::{self, Claim};
use reqwest::Method;
use serde_json::Value;

const RUNS: &str = "/api/v1/projects/demo/pipelines";

const CI: &str = "name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    steps:
      - run: echo build
  test:
    needs: build
    steps:
      - run: echo test
";

/// Pushes the CI pipeline and waits for run 1; returns its job ids (build, test).
async fn pushed_run(s: &TestServer) -> (i64, i64) {
    let (git, work, _) = app_checkout(s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    git.commit(&work, ".ouro/pipelines/ci.yml", CI, "Add CI")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, body) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        if st == 200 {
            let jobs = body["jobs"].as_array().unwrap();
            return (
                jobs[0]["id"].as_i64().unwrap(),
                jobs[1]["id"].as_i64().unwrap(),
            );
        }
        assert!(std::time::Instant::now() < deadline, "no run: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn claim(s: &TestServer) -> Claim {
    runs::claim_next(&s.state.store, "test-runner", 600_000)
        .await
        .unwrap()
        .expect("a job is ready")
}

fn writer(s: &TestServer, c: &Claim, cap: u64) -> LogWriter {
    let dir = runs::log_dir(&s.state.settings.data_dir, c.job.id, c.job.attempt);
    LogWriter::create(
        &dir,
        LogConfig {
            cap_bytes: cap,
            segment_bytes: 64,
            zstd_level: 1,
        },
    )
    .unwrap()
}

fn job_path(job: i64) -> String {
    format!("{RUNS}/1/jobs/{job}")
}

/// A parsed server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Reads server-sent events from a streaming response.
struct Events {
    res: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    async fn open(s: &TestServer, path: &str, last_id: Option<&str>) -> Events {
        let mut r = s
            .client
            .get(s.url(path))
            .bearer_auth(&s.admin_token)
            .timeout(Duration::from_secs(120));
        if let Some(id) = last_id {
            r = r.header("last-event-id", id);
        }
        let res = r.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Events {
            res,
            buf: Vec::new(),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..i + 2).collect();
                let text = String::from_utf8(raw).unwrap();
                let mut ev = Sse {
                    event: "message".into(),
                    id: None,
                    data: Value::Null,
                };
                let mut data = String::new();
                let mut any = false;
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if !any {
                    continue;
                }
                ev.data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Some(ev);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.res.chunk())
                .await
                .expect("an event within a minute")
                .unwrap()?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Events until one of kind `until` (included).
    async fn until(&mut self, until: &str) -> Vec<Sse> {
        let mut out = Vec::new();
        loop {
            let ev = self.next().await.expect("stream still open");
            let stop = ev.event == until;
            out.push(ev);
            if stop {
                return out;
            }
        }
    }

    /// Log events until the stream reached `offset`.
    async fn log_until(&mut self, offset: u64, seen: &mut Vec<Sse>) {
        loop {
            let ev = self.next().await.expect("stream still open");
            let end = (ev.event == "log").then(|| ev.data["end"].as_u64().unwrap());
            seen.push(ev);
            if end.is_some_and(|e| e >= offset) {
                return;
            }
        }
    }
}

/// The text of log events, checking that each starts where the previous ended.
fn joined(events: &[Sse], from: u64) -> String {
    let mut pos = from;
    let mut text = String::new();
    for e in events.iter().filter(|e| e.event == "log") {
        assert_eq!(e.data["offset"].as_u64().unwrap(), pos, "{events:?}");
        let t = e.data["text"].as_str().unwrap();
        let end = e.data["end"].as_u64().unwrap();
        assert_eq!(end - pos, t.len() as u64, "{e:?}");
        assert_eq!(e.id.as_deref(), Some(end.to_string().as_str()));
        text.push_str(t);
        pos = end;
    }
    text
}

#[tokio::test]
async fn the_raw_log_is_byte_exact_with_offsets_ranges_and_download() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let viewer = member(&s, "viewer", "viewer").await;
        let outsider = s.user("outsider").await;
        let (build, test) = pushed_run(&s).await;
        let c = claim(&s).await;
        assert_eq!(c.job.id, build);
        let mut w = writer(&s, &c, 1 << 20);
        let mut log: Vec<u8> = b"setup\n".to_vec();
        w.append(0, &log, 1_000).unwrap();
        w.begin_step(0, "compile", 2_000).unwrap();
        let body: &[u8] = b"\x1b[32mok\x1b[0m \xff\xfe binary\nline two\n";
        w.append(log.len() as u64, body, 2_500).unwrap();
        log.extend_from_slice(body);
        w.end_step(0, Some(0), 4_000).unwrap();
        w.finish().unwrap();
        let len = log.len() as u64;

        // The job with its sections.
        let (st, j) = s.admin(Method::GET, &job_path(build), None).await;
        assert_eq!(st, 200, "{j}");
        assert_eq!(j["job"]["key"], "build");
        assert_eq!(j["job"]["status"], "running");
        assert_eq!(j["log"]["size"], len);
        assert_eq!(j["log"]["attempt"], 1);
        assert_eq!(j["log"]["finished"], true);
        assert_eq!(j["sections"][0]["name"], "compile");
        assert_eq!(j["sections"][0]["duration_ms"], 2_000);
        assert_eq!(j["sections"][0]["status"], "success");
        // The queued job has no log yet.
        let (st, t) = s.admin(Method::GET, &job_path(test), None).await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["log"]["size"], 0);
        assert_eq!(t["log"]["attempt"], 0);

        // Raw, byte-exact.
        let raw = format!("{}/log", job_path(build));
        let r = s
            .req(Method::GET, &raw, Some(&viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/plain; charset=utf-8"
        );
        assert!(
            r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("inline")
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &log[..]);
        // ?offset= gives the rest.
        let r = s
            .req(Method::GET, &format!("{raw}?offset=6"), Some(&viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &log[6..]);
        // A suffix Range and an explicit one.
        let r = s
            .req(Method::GET, &raw, Some(&viewer))
            .header("range", "bytes=-9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes {}-{}/{len}", len - 9, len - 1)
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &log[log.len() - 9..]);
        let r = s
            .req(Method::GET, &raw, Some(&viewer))
            .header("range", "bytes=6-13")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &log[6..14]);
        // Outside the log: 416 with the size.
        let r = s
            .req(Method::GET, &raw, Some(&viewer))
            .header("range", format!("bytes={len}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 416);
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes */{len}")
        );
        let (_, b) = parse(r).await;
        assert_eq!(error_code(&b), "build.log_range");
        let (st, b) = s
            .admin(Method::GET, &format!("{raw}?offset={}", len + 1), None)
            .await;
        assert_eq!(st, 416, "{b}");
        // Download.
        let r = s
            .req(Method::GET, &format!("{raw}?download=1"), Some(&viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["content-disposition"].to_str().unwrap(),
            "attachment; filename=\"demo-1-build-1.log\""
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &log[..]);
        // The queued job's log is empty, not an error.
        let r = s
            .req(
                Method::GET,
                &format!("{}/log", job_path(test)),
                Some(&viewer),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap().is_empty());

        // Not found: an unknown job, a job of another run, an attempt that never was.
        for path in [
            format!("{RUNS}/1/jobs/999999"),
            format!("{RUNS}/1/jobs/999999/log"),
            format!("{RUNS}/1/jobs/999999/log/stream"),
            format!("{}?attempt=2", job_path(build)),
        ] {
            let (st, b) = s.admin(Method::GET, &path, None).await;
            assert_eq!(st, 404, "{path}: {b}");
            assert_eq!(error_code(&b), "build.job_not_found", "{path}");
        }
        let (st, b) = s
            .admin(Method::GET, &format!("{RUNS}/7/jobs/{build}"), None)
            .await;
        assert_eq!(st, 404, "{b}");
        assert_eq!(error_code(&b), "build.run_not_found");
        // A non-member of the private project sees nothing of it.
        for path in [
            job_path(build),
            format!("{}/log", job_path(build)),
            format!("{}/log/stream", job_path(build)),
            format!("/projects/demo/pipelines/1/jobs/{build}"),
        ] {
            let r = s
                .req(Method::GET, &path, Some(&outsider))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{path}");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn the_live_stream_follows_the_log_with_offsets_and_ends_when_the_job_finished() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (build, _) = pushed_run(&s).await;
        let c = claim(&s).await;
        let mut w = writer(&s, &c, 1 << 20);
        let mut log: Vec<u8> = b"first line\n".to_vec();
        w.append(0, &log, 1_000).unwrap();
        let stream = format!("{}/log/stream", job_path(build));
        let mut es = Events::open(&s, &stream, None).await;
        let mut seen = Vec::new();
        es.log_until(log.len() as u64, &mut seen).await;

        // Written while the stream is open: a partial line, then its rest, then a step.
        let more: [&[u8]; 2] = [b"half ", b"done <b>\n"];
        for m in more {
            w.append(log.len() as u64, m, 2_000).unwrap();
            log.extend_from_slice(m);
            s.state.log_hub.notify(build);
            es.log_until(log.len() as u64, &mut seen).await;
        }
        w.begin_step(0, "test", 3_000).unwrap();
        let step: &[u8] = b"\x1b[31mred\x1b[0m\n";
        w.append(log.len() as u64, step, 3_100).unwrap();
        log.extend_from_slice(step);
        es.log_until(log.len() as u64, &mut seen).await;
        w.end_step(0, Some(0), 3_500).unwrap();
        w.finish().unwrap();
        runs::finish_job(&s.state.store, c.job.id, &c.token, "success", Some(0))
            .await
            .unwrap();
        seen.extend(es.until("end").await);
        assert!(es.next().await.is_none(), "the stream closes after end");

        assert_eq!(joined(&seen, 0), String::from_utf8(log.clone()).unwrap());
        let end = seen.last().unwrap();
        assert_eq!(end.data["status"], "success", "{end:?}");
        assert_eq!(end.data["size"], log.len() as u64);
        // The section came before its lines, then again with its end.
        let kinds: Vec<(String, Value)> = seen
            .iter()
            .filter(|e| e.event == "section")
            .map(|e| (e.event.clone(), e.data["status"].clone()))
            .collect();
        assert_eq!(kinds.len(), 2, "{seen:?}");
        assert_eq!(kinds[0].1, "running");
        assert_eq!(kinds[1].1, "success");
        let sec_at = seen.iter().position(|e| e.event == "section").unwrap();
        let red_at = seen
            .iter()
            .position(|e| e.event == "log" && e.data["text"].as_str().unwrap().contains("red"))
            .unwrap();
        assert!(sec_at < red_at, "{seen:?}");
        // Lines come rendered: a continuation piece, ANSI as classes.
        let cont = seen
            .iter()
            .filter(|e| e.event == "log")
            .find(|e| e.data["text"] == "done <b>\n")
            .expect("the rest of the line as its own event");
        assert_eq!(cont.data["lines"][0]["cont"], true);
        assert_eq!(cont.data["lines"][0]["spans"][0]["t"], "done <b>");
        let red = &seen[red_at];
        assert_eq!(red.data["lines"][0]["spans"][0]["c"], "ansi-fg-1");
        assert_eq!(red.data["lines"][0]["spans"][0]["t"], "red");
        assert_eq!(red.data["lines"][0]["time"], 3_100);

        // Resuming from an event id sends exactly the rest, then the end at once.
        let mid = seen
            .iter()
            .find(|e| e.event == "log" && e.data["offset"] == 0)
            .and_then(|e| e.id.clone())
            .unwrap();
        let mut again = Events::open(&s, &stream, Some(&mid)).await;
        let rest = again.until("end").await;
        let from: u64 = mid.parse().unwrap();
        assert_eq!(
            joined(&rest, from),
            String::from_utf8(log[from as usize..].to_vec()).unwrap()
        );
        // ?offset= does the same.
        let mut tail = Events::open(&s, &format!("{stream}?offset=11"), None).await;
        let rest = tail.until("end").await;
        assert_eq!(
            joined(&rest, 11),
            String::from_utf8(log[11..].to_vec()).unwrap()
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn a_queued_jobs_stream_waits_and_ends_when_the_run_is_cancelled() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (_, test) = pushed_run(&s).await;
        let mut es = Events::open(&s, &format!("{}/log/stream", job_path(test)), None).await;
        let (st, b) = s
            .admin(Method::POST, &format!("{RUNS}/1/cancel"), None)
            .await;
        assert_eq!(st, 200, "{b}");
        let evs = es.until("end").await;
        assert!(evs.iter().all(|e| e.event != "log"), "{evs:?}");
        assert_eq!(evs.last().unwrap().data["status"], "cancelled");
        s.stop().await;
    }
}

#[tokio::test]
async fn the_job_page_shows_sections_colours_search_and_truncation_and_the_run_links_it() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let viewer = member(&s, "viewer", "viewer").await;
        let (build, _) = pushed_run(&s).await;
        let c = claim(&s).await;
        let mut w = writer(&s, &c, 200);
        w.append(0, b"preparing\n", 1_000).unwrap();
        w.begin_step(0, "compile", 2_000).unwrap();
        w.append(
            10,
            b"\x1b[1;31merror\x1b[0m: <script>alert(1)</script>\n",
            2_000,
        )
        .unwrap();
        w.end_step(0, Some(2), 5_000).unwrap();
        let off = w.received();
        w.append(off, &[b'x'; 300], 6_000).unwrap();
        w.finish().unwrap();

        let page = format!("/projects/demo/pipelines/1/jobs/{build}");
        let r = s
            .req(Method::GET, &page, Some(&viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(
            html.contains("<details class=\"log-section log-step-failure\" data-step=\"0\" data-ended=\"true\" open>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"log-step-name\">compile</span>"));
        assert!(html.contains("3.0s"), "the step's duration: {html}");
        assert!(html.contains("exit 2"));
        assert!(html.contains(
            "<span class=\"ansi-bold ansi-fg-1\">error</span>: &lt;script&gt;alert(1)&lt;/script&gt;"
        ));
        assert!(!html.contains("<script>alert"), "log text is escaped");
        assert!(html.contains("id=\"L2\""), "line anchors");
        assert!(
            html.contains("log-line log-marker"),
            "the truncation marker is marked"
        );
        assert!(html.contains("id=\"log-truncated\""));
        assert!(html.contains(&format!(
            "href=\"/api/v1/projects/demo/pipelines/1/jobs/{build}/log?download=1\""
        )));
        assert!(html.contains("src=\"/assets/joblog.js\""));
        assert!(html.contains("data-live=\"true\""));
        assert!(!html.contains("id=\"log-matches\""));

        // Search.
        let r = s
            .req(Method::GET, &format!("{page}?q=SCRIPT"), Some(&viewer))
            .send()
            .await
            .unwrap();
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"log-matches\""), "{html}");
        assert!(html.contains("1 matching line"), "{html}");
        assert!(html.contains("&lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt;"));
        assert!(html.contains("href=\"#L2\""));
        let r = s
            .req(Method::GET, &format!("{page}?q=nowhere"), Some(&viewer))
            .send()
            .await
            .unwrap();
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("No line of this log contains")
        );

        // The assets the page needs.
        for a in ["/assets/joblog.js", "/assets/ansi.css"] {
            let r = s.req(Method::GET, a, None).send().await.unwrap();
            assert_eq!(r.status(), 200, "{a}");
        }

        // The run page links the job and polls its graph while the run is not finished.
        let (st, run) = s.admin_page("/projects/demo/pipelines/1").await;
        assert_eq!(st, 200);
        assert!(run.contains(&format!("href=\"{page}\"")), "{run}");
        assert!(run.contains("hx-get=\"/projects/demo/pipelines/1/graph\""));
        let (st, frag) = s.admin_page("/projects/demo/pipelines/1/graph").await;
        assert_eq!(st, 200);
        assert!(
            frag.contains("id=\"run-status\" hx-swap-oob=\"true\""),
            "{frag}"
        );
        assert!(frag.contains("hx-trigger=\"every 2s\""));
        runs::finish_job(&s.state.store, c.job.id, &c.token, "failure", Some(2))
            .await
            .unwrap();
        let (_, frag) = s.admin_page("/projects/demo/pipelines/1/graph").await;
        assert!(
            !frag.contains("hx-get"),
            "a finished run stops polling: {frag}"
        );
        assert!(frag.contains("job-failure"));
        let (_, done) = s.admin_page(&page).await;
        assert!(done.contains("data-live=\"false\""));
        assert!(done.contains("exit code 2"));
        // Unknown job page: 404.
        let (st, _) = s.admin_page("/projects/demo/pipelines/1/jobs/999999").await;
        assert_eq!(st, 404);
        s.stop().await;
    }
}
