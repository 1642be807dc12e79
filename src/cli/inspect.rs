//! `dagml inspect MODEL_FILE [--format text|json]`: what a model file holds and
//! what its model learned. The library (`ml::inspect`) builds it; this prints it.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// A model file written by a pipeline's `model` output.
    model: PathBuf,
    /// Text for people, JSON (every coefficient and importance) for programs.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(a: Args) -> ExitCode {
    let bytes = match std::fs::read(&a.model) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", a.model.display());
            return ExitCode::from(2);
        }
    };
    let i = match dagml::ml::inspect::inspect_bytes(&bytes) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: `{}`: {e}", a.model.display());
            return ExitCode::from(1);
        }
    };
    let text = match a.format {
        Format::Text => dagml::ml::inspect::render_text(&i),
        Format::Json => match serde_json::to_string_pretty(&i) {
            Ok(mut t) => {
                t.push('\n');
                t
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    super::write_out(None, &text)
}
