//! `ouro lint [FILES...]`: checks pipeline files without a server.
//!
//! Each diagnostic is printed twice: rustc-style (with the source line) on standard error for
//! people, and as one contract line `FILE:LINE:COL: error[CODE]: message` on standard output for
//! tools. Exit status: 0 when every file is valid, 1 when any has an error, 2 on a usage error
//! (a missing or unreadable file, no files to lint).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Args)]
pub struct LintArgs {
    /// Pipeline files to check (default: .ouro/pipelines/*.yml of the current directory).
    files: Vec<PathBuf>,
}

/// The pipeline files of a checkout: `.ouro/pipelines/*.yml` under `root`, sorted by name.
pub fn discover(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = root.join(".ouro/pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Runs the command and returns the exit status.
pub fn run(args: LintArgs) -> i32 {
    let files = if args.files.is_empty() {
        match discover(Path::new(".")) {
            Ok(f) if !f.is_empty() => f
                .into_iter()
                .map(|p| p.strip_prefix("./").map(Path::to_path_buf).unwrap_or(p))
                .collect(),
            Ok(_) => {
                eprintln!(
                    "error: no pipeline files: .ouro/pipelines/ has no *.yml file; pass the files to check"
                );
                return 2;
            }
            Err(_) => {
                eprintln!(
                    "error: no .ouro/pipelines/ directory here; run `ouro lint` in a repository checkout or pass the files to check"
                );
                return 2;
            }
        }
    } else {
        args.files
    };
    let mut contents = Vec::new();
    for f in &files {
        match std::fs::read(f) {
            Ok(b) => contents.push(b),
            Err(e) => {
                let why = if f.is_dir() {
                    "it is a directory".to_string()
                } else if e.kind() == std::io::ErrorKind::NotFound {
                    "no such file".to_string()
                } else {
                    e.to_string()
                };
                eprintln!("error: cannot read {}: {why}", f.display());
                return 2;
            }
        }
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let (mut errors, mut bad_files) = (0usize, 0usize);
    for (f, bytes) in files.iter().zip(&contents) {
        let name = f.display().to_string();
        let diags = ouro_build::pipeline::lint(&name, bytes);
        if diags.iter().any(|d| d.is_error()) {
            bad_files += 1;
        }
        let text = std::str::from_utf8(bytes).ok();
        for d in &diags {
            errors += usize::from(d.is_error());
            let _ = writeln!(err, "{}", d.render(text));
            let _ = writeln!(out, "{}", d.one_line());
        }
    }
    let _ = out.flush();
    if errors > 0 {
        let _ = writeln!(
            err,
            "error: {errors} error{} in {bad_files} of {} file{}",
            if errors == 1 { "" } else { "s" },
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
        1
    } else {
        let _ = writeln!(
            err,
            "ok: {} pipeline file{} checked, no problems",
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
        0
    }
}
