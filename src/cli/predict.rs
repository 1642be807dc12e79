//! `dagml predict MODEL INPUT -o OUT`

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A model file written by a pipeline's `model` output.
    model: PathBuf,
    /// Rows to predict: a .parquet, .csv or .arrow file.
    input: PathBuf,
    /// Where to write the rows with a `prediction` column (.parquet, .csv, .arrow).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(a: Args) -> ExitCode {
    match dagml::predict::predict_file(&a.model, &a.input, &a.output) {
        Ok(rows) => {
            eprintln!("wrote {rows} predictions to {}", a.output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
