//! `dagml report METRICS_JSON [MODEL...] -o report.html`: the HTML report a
//! pipeline's `report` output writes, made after the fact from its metrics
//! JSON (and model files, for importances the metrics JSON does not hold).

use dagml::ml::evaluation::MetricsDoc;
use dagml::ml::inspect;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A metrics JSON file written by a pipeline's `metrics` output.
    metrics: PathBuf,
    /// Model files of the evaluated models (optional).
    models: Vec<PathBuf>,
    /// Where to write the HTML.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(a: Args) -> ExitCode {
    let text = match super::read_text(&a.metrics) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let doc: MetricsDoc = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "error: `{}` is not a dagml metrics file: {e}",
                a.metrics.display()
            );
            return ExitCode::from(1);
        }
    };
    let mut models = Vec::new();
    for m in &a.models {
        let bytes = match std::fs::read(m) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", m.display());
                return ExitCode::from(2);
            }
        };
        match inspect::inspect_bytes(&bytes) {
            Ok(i) => models.push((i.origin.model, i.learned)),
            Err(e) => {
                eprintln!("error: `{}`: {e}", m.display());
                return ExitCode::from(1);
            }
        }
    }
    match dagml::report::render(&doc, &models) {
        Ok(html) => {
            let code = super::write_out(Some(&a.output), &html);
            if code == ExitCode::SUCCESS {
                eprintln!("wrote {}", a.output.display());
            }
            code
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
