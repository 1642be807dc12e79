//! `dagml convert FILE --to toml|dagml [-o OUT]`

use dagml::frontend::{SourceFile, Syntax, emit};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The pipeline file (.toml or .dagml).
    file: PathBuf,
    /// The syntax to write.
    #[arg(long, value_enum)]
    to: To,
    /// Write here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum To {
    Toml,
    Dagml,
}

pub fn run(a: Args) -> ExitCode {
    let shown = a.file.to_string_lossy().into_owned();
    let text = match super::read_text(&a.file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let to = match a.to {
        To::Toml => Syntax::Toml,
        To::Dagml => Syntax::Dagml,
    };
    match emit::convert(&shown, &text, to) {
        Ok(out) => super::write_out(a.output.as_deref(), &out),
        Err(diags) => {
            let file = SourceFile::new(&shown, text);
            for d in &diags {
                println!("{}", d.render(&file));
            }
            eprintln!("error: `{shown}` is not a valid pipeline; nothing was converted");
            ExitCode::from(1)
        }
    }
}
