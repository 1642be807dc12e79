//! `dagml plan FILE [-o plan.svg|.dot|.png] [--level logical|physical] [--explain]`

use dagml::plan::{dot, render};
use dagml::workspace::{self, CheckOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The pipeline file.
    file: PathBuf,
    /// Write the picture here; the extension picks the format (.svg, .dot, .png).
    /// Without it, DOT is printed.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// `physical` (tasks, fan-out counts, placement) or `logical` (operations).
    #[arg(long, value_enum, default_value = "physical")]
    level: Level,
    /// Print the plan after each optimizer rule that changed it.
    #[arg(long)]
    explain: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Level {
    Logical,
    Physical,
}

pub fn run(a: Args) -> ExitCode {
    let (report, planned) = match workspace::plan_file(&a.file, &CheckOptions::default()) {
        Ok(x) => x,
        Err(report) => {
            for d in &report.parsed.diagnostics {
                println!("{}", d.render(&report.parsed.file));
            }
            eprintln!(
                "error: `{}` is not a valid pipeline; nothing was planned",
                a.file.display()
            );
            return ExitCode::from(1);
        }
    };
    for d in &report.parsed.diagnostics {
        eprintln!("{}", d.render(&report.parsed.file));
    }
    for m in workspace::disk_warnings(&report, std::path::Path::new(".")) {
        eprintln!("{}: warning[disk]: {m}", a.file.display());
    }
    if a.explain {
        println!("== initial plan\n{}", planned.initial);
        for s in &planned.steps {
            println!("== after {}\n{}", s.rule, s.plan);
        }
        println!(
            "== physical plan: {} tasks\n{}",
            planned.physical.tasks.len(),
            planned.physical.display()
        );
    }
    let level = match a.level {
        Level::Logical => dot::Level::Logical,
        Level::Physical => dot::Level::Physical,
    };
    let text = dot::to_dot(&planned.physical, level);
    let Some(out) = a.output else {
        if !a.explain {
            print!("{text}");
        }
        return ExitCode::SUCCESS;
    };
    let shown = out.to_string_lossy().into_owned();
    let Some(format) = render::Format::from_path(&shown) else {
        eprintln!("error: cannot tell the picture format of `{shown}`; use .svg, .dot or .png");
        return ExitCode::from(2);
    };
    // A picture of thousands of steps is drawn collapsed (DOT keeps them all).
    let (text, note) = match format {
        render::Format::Dot => (text, None),
        _ => dot::to_dot_for_picture(&planned.physical, level),
    };
    if let Some(n) = &note {
        eprintln!("note: {n}");
    }
    match render::render(&text, format) {
        Ok((bytes, renderer)) => {
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(&out, bytes) {
                eprintln!("error: cannot write `{shown}`: {e}");
                return ExitCode::from(1);
            }
            eprintln!(
                "wrote {shown} ({} tasks; rendered with {})",
                planned.physical.tasks.len(),
                renderer.describe()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if matches!(e, render::RenderError::NoDotForPng) {
                eprintln!(
                    "help: install Graphviz (apt-get install graphviz), or write .svg, which works without it"
                );
            }
            ExitCode::from(1)
        }
    }
}
