//! `dagml check PATH...`: every diagnostic of every file, then this
//! machine's disk warnings (`workspace::disk_warnings`), which are warnings
//! like the others (`--deny-warnings` fails on them).

use dagml::frontend::Severity;
use dagml::workspace::{self, CheckOptions};
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Pipeline files, or folders searched recursively for *.toml and *.dagml.
    #[arg(required = true)]
    paths: Vec<std::path::PathBuf>,
    /// `text` (rustc-like) or `json` (one object per problem, one per line).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also check that data files exist and hold the named columns.
    #[arg(long)]
    data: bool,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    deny_warnings: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(a: Args) -> ExitCode {
    let files = match workspace::collect_files(&a.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = CheckOptions {
        data: a.data,
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    let (mut errors, mut warnings, mut bad_files) = (0usize, 0usize, 0usize);
    for path in &files {
        let report = workspace::check_file(path, &opts);
        let e = report
            .parsed
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        // This machine's disks: warnings `run` would turn into a refusal.
        let disk = workspace::disk_warnings(&report, std::path::Path::new("."));
        let w = report.parsed.diagnostics.len() - e + disk.len();
        errors += e;
        warnings += w;
        if e > 0 || (a.deny_warnings && w > 0) {
            bad_files += 1;
        }
        for d in &report.parsed.diagnostics {
            let _ = match a.format {
                Format::Text => writeln!(out, "{}", d.render(&report.parsed.file)),
                Format::Json => writeln!(out, "{}", d.to_json(&report.parsed.file)),
            };
        }
        for m in &disk {
            let _ = match a.format {
                Format::Text => writeln!(out, "{}: warning[disk]: {m}", path.display()),
                Format::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "file": path.display().to_string(),
                        "severity": "warning",
                        "code": "disk",
                        "message": m,
                    })
                ),
            };
        }
    }
    if matches!(a.format, Format::Text) {
        eprintln!(
            "checked {} file{}: {errors} error{}, {warnings} warning{}",
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        );
    }
    if bad_files > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
