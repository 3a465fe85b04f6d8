//! `ouro lint [FILES...]`: checks pipeline files, `.ouro/services.yml` and
//! `.ouro/environments.yml` without a server.
//!
//! Each diagnostic is printed twice: rustc-style (with the source line) on standard error for
//! people, and as one contract line `FILE:LINE:COL: error[CODE]: message` on standard output for
//! tools. Exit status: 0 when every file is valid, 1 when any has an error, 2 on a usage error
//! (a missing or unreadable file, no files to lint).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use ouro_build::Diagnostic;

#[derive(Args)]
pub struct LintArgs {
    /// Files to check; the name picks the check: services.yml/.yaml, environments.yml/.yaml,
    /// anything else is a pipeline file (default: .ouro/pipelines/*.yml, and .ouro/services.yml
    /// and .ouro/environments.yml when present).
    files: Vec<PathBuf>,
}

/// Which checker a file goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pipeline,
    Services,
    Environments,
}

impl Kind {
    /// By file name: `services.yml`/`.yaml` and `environments.yml`/`.yaml` are those files
    /// wherever they are; anything else is a pipeline file.
    pub fn of(path: &Path) -> Kind {
        match path.file_name().and_then(|n| n.to_str()) {
            Some("services.yml" | "services.yaml") => Kind::Services,
            Some("environments.yml" | "environments.yaml") => Kind::Environments,
            _ => Kind::Pipeline,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Pipeline => "pipeline",
            Kind::Services => "services",
            Kind::Environments => "environments",
        }
    }
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

/// The files `ouro lint` checks in the current directory when given none, or why there are
/// none.
fn default_files() -> Result<Vec<PathBuf>, String> {
    let pipelines = discover(Path::new("."));
    let mut files: Vec<PathBuf> = pipelines
        .as_ref()
        .map(|f| {
            f.iter()
                .map(|p| {
                    p.strip_prefix("./")
                        .map(Path::to_path_buf)
                        .unwrap_or(p.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    for extra in [
        ouro_deploy::services::FILE,
        ouro_release::environments::FILE,
    ] {
        if Path::new(extra).is_file() {
            files.push(PathBuf::from(extra));
        }
    }
    if !files.is_empty() {
        return Ok(files);
    }
    Err(match pipelines {
        Ok(_) => "error: no pipeline files: .ouro/pipelines/ has no *.yml file (and there is no .ouro/services.yml or .ouro/environments.yml); pass the files to check".to_string(),
        Err(_) => "error: no .ouro/pipelines/ directory here (nor .ouro/services.yml or .ouro/environments.yml); run `ouro lint` in a repository checkout or pass the files to check".to_string(),
    })
}

/// The diagnostics of one file (empty when it is valid).
pub fn check(path: &Path, bytes: &[u8]) -> Vec<Diagnostic> {
    let name = path.display().to_string();
    match Kind::of(path) {
        Kind::Pipeline => ouro_build::pipeline::lint(&name, bytes),
        Kind::Services => ouro_deploy::services::lint(&name, bytes),
        Kind::Environments => match std::str::from_utf8(bytes) {
            Ok(text) => ouro_release::environments::parse(&name, text)
                .err()
                .unwrap_or_default(),
            Err(e) => vec![ouro_deploy::services::not_utf8(
                &name,
                bytes,
                e.valid_up_to(),
                ouro_release::environments::ENV_SYNTAX,
            )],
        },
    }
}

/// "2 pipeline files, 1 services file and 1 environments file".
fn counted(files: &[PathBuf]) -> String {
    let parts: Vec<String> = [Kind::Pipeline, Kind::Services, Kind::Environments]
        .into_iter()
        .filter_map(|k| {
            let n = files.iter().filter(|f| Kind::of(f) == k).count();
            (n > 0).then(|| format!("{n} {} file{}", k.noun(), if n == 1 { "" } else { "s" }))
        })
        .collect();
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => "no files".into(),
    }
}

/// Runs the command and returns the exit status.
pub fn run(args: LintArgs) -> i32 {
    let files = if args.files.is_empty() {
        match default_files() {
            Ok(f) => f,
            Err(why) => {
                eprintln!("{why}");
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
        let diags = check(f, bytes);
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
        let _ = writeln!(err, "ok: {} checked, no problems", counted(&files));
        0
    }
}
