//! `ouro test-report parse [--json] FILE...`: reads JUnit XML and coverage reports (Cobertura or
//! LCOV, told apart by content) without a server and prints the normalised summary.
//!
//! Exit status: 0 when every file parsed, whatever the tests' outcomes; 2 when a file could not
//! be read or parsed (each such file gets one `FILE:LINE:COL: error[CODE]: message` line on
//! standard error, and nothing is printed on standard output).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use ouro_test::parse::{self, Kind, Limits};
use ouro_test::summary;

#[derive(Subcommand)]
pub enum TestReportCommand {
    /// Parse JUnit XML and coverage files and print one summary for all of them together.
    Parse(ParseArgs),
}

#[derive(Args)]
pub struct ParseArgs {
    /// Print one JSON object (`total`, `passed`, `failed`, `skipped`, `errored`, `flaky`,
    /// `cases`, and `coverage` when coverage files are given) instead of the text summary.
    #[arg(long)]
    json: bool,
    /// Report files: JUnit XML (any producer), Cobertura XML or LCOV.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Runs the command and returns the exit status.
pub fn run(cmd: TestReportCommand) -> i32 {
    match cmd {
        TestReportCommand::Parse(args) => parse_files(args),
    }
}

fn parse_files(args: ParseArgs) -> i32 {
    let limits = Limits::default();
    let mut reports = Vec::new();
    let mut coverages = Vec::new();
    let mut failed = false;
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    for f in &args.files {
        let name = f.display().to_string();
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                let why = if f.is_dir() {
                    "it is a directory".to_string()
                } else if e.kind() == std::io::ErrorKind::NotFound {
                    "no such file".to_string()
                } else {
                    e.to_string()
                };
                let _ = writeln!(err, "error: cannot read {name}: {why}");
                failed = true;
                continue;
            }
        };
        let parsed = match parse::detect(&bytes) {
            Kind::Coverage => parse::coverage(&name, &bytes, &limits).map(|c| coverages.push(c)),
            Kind::Junit => parse::junit(&name, &bytes, &limits).map(|r| reports.push(r)),
        };
        if let Err(e) = parsed {
            let _ = writeln!(err, "{e}");
            failed = true;
        }
    }
    if failed {
        return 2;
    }
    let report = parse::merge(reports);
    let coverage = (!coverages.is_empty()).then(|| parse::merge_coverage(coverages));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = if args.json {
        serde_json::to_writer(&mut out, &summary::json(&report, coverage.as_ref()))
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write!(out, "{}", summary::text(&report, coverage.as_ref()))
    };
    if written.and_then(|()| out.flush()).is_err() {
        // Standard output closed (e.g. piped into `head`): nothing more to say.
        return 0;
    }
    0
}
