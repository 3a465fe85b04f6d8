//! What one job of `true` costs in the shell executor alone (issue 5, W3's per-job time without
//! the server): N jobs one after another, each with a checkout from the tree cache, then the
//! phases' medians and the CPU time of this process and its children per job.
//!
//! Run: `cargo run --release -p ouro-build --example job_cost [N] [WRAPPER]`
//! (WRAPPER: the `ouro` binary, which the server uses as its exec wrapper; none: `pre_exec`).
//! Numbers go to docs/benchmarks.md; no timing in tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ouro_build::exec::{Checkout, Executor, JobContext, JobSpec, ShellExecutor, StepSpec};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=B", "-c", "user.email=b@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn cpu_ms() -> (f64, f64) {
    let mut self_u: libc::rusage = unsafe { std::mem::zeroed() };
    let mut kids: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the local structs.
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut self_u);
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut kids);
    }
    let ms = |r: &libc::rusage| {
        (r.ru_utime.tv_sec + r.ru_stime.tv_sec) as f64 * 1e3
            + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) as f64 / 1e3
    };
    (ms(&self_u), ms(&kids))
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let wrapper = args.next().map(PathBuf::from);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join(".ouro/pipelines")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for f in ["w1", "w2", "w3", "w4"] {
        std::fs::write(repo.join(format!(".ouro/pipelines/{f}.yml")), "name: x\n").unwrap();
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "pipelines"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);

    let mut ex = ShellExecutor::new(dir.path().join("work"));
    ex.cache_dir = Some(dir.path().join("cache"));
    ex.exec_wrapper = wrapper.clone();
    let (mut total, mut checkout, mut step) = (Vec::new(), Vec::new(), Vec::new());
    let (cpu0, kids0) = cpu_ms();
    for i in 0..=n {
        let job = JobSpec {
            id: format!("j{i}"),
            checkout: Some(Checkout {
                repo: repo.clone(),
                sha: sha.clone(),
            }),
            steps: vec![StepSpec {
                name: "true".into(),
                run: "true".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (ctx, mut rx, _cancel) = JobContext::channel(16);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let t = Instant::now();
        let out = ex.run(&job, ctx).await.expect("the job runs");
        let wall = t.elapsed();
        drain.await.unwrap();
        if i == 0 {
            continue; // the first job fills the tree cache
        }
        total.push(wall);
        checkout.push(out.checkout_duration);
        step.push(out.steps[0].duration);
    }
    let (cpu1, kids1) = cpu_ms();
    println!(
        "{n} jobs of `true`, wrapper {}: per job p50 {:.2} ms (checkout {:.2}, step {:.2}); \
         CPU per job: this process {:.2} ms, children {:.2} ms",
        wrapper
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none (pre_exec)".into()),
        median(total),
        median(checkout),
        median(step),
        (cpu1 - cpu0) / n as f64,
        (kids1 - kids0) / n as f64,
    );
}
