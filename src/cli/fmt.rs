//! `dagml fmt FILE [--check] [--write]`

use dagml::frontend::{SourceFile, dsl};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The .dagml file.
    file: PathBuf,
    /// Print nothing; exit 1 if the file is not in canonical layout.
    #[arg(long, conflicts_with = "write")]
    check: bool,
    /// Rewrite the file in place.
    #[arg(long)]
    write: bool,
}

pub fn run(a: Args) -> ExitCode {
    let shown = a.file.to_string_lossy().into_owned();
    if !shown.ends_with(".dagml") {
        eprintln!(
            "error: `{shown}` is not a .dagml file; `dagml convert FILE --to toml` writes TOML in canonical layout"
        );
        return ExitCode::from(2);
    }
    let text = match super::read_text(&a.file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let formatted = match dsl::format(&text) {
        Ok(f) => f,
        Err(diags) => {
            let file = SourceFile::new(&shown, text);
            for d in &diags {
                println!("{}", d.render(&file));
            }
            eprintln!("error: `{shown}` has syntax errors; it was not formatted");
            return ExitCode::from(1);
        }
    };
    if a.check {
        if formatted == text {
            return ExitCode::SUCCESS;
        }
        eprintln!("`{shown}` is not formatted; run `dagml fmt --write {shown}`");
        return ExitCode::from(1);
    }
    if a.write {
        if formatted != text
            && let Err(e) = std::fs::write(&a.file, &formatted)
        {
            eprintln!("error: cannot write `{shown}`: {e}");
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    super::write_out(None, &formatted)
}
