//! Front-end speed: read, parse, check, optimize and plan every pipeline in
//! pipelines/ (goal: under 50 ms for all of them together).
//!
//! Run: `cargo bench --bench frontend`. Prints criterion's figures and, at the
//! end, one line per goal with the measured mean and the ratio to the goal.

use criterion::{Criterion, criterion_group};
use dagml::workspace::{self, CheckOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn files() -> Vec<PathBuf> {
    workspace::collect_files(&[PathBuf::from("pipelines")]).expect("pipelines/ exists")
}

fn check_all(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            workspace::check_file(f, &CheckOptions::default())
                .parsed
                .diagnostics
                .len()
        })
        .sum()
}

fn plan_all(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            workspace::plan_file(f, &CheckOptions::default())
                .map(|(_, p)| p.physical.tasks.len())
                .unwrap_or(0)
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let f = files();
    c.bench_function("check all pipelines", |b| b.iter(|| check_all(&f)));
    c.bench_function("plan all pipelines", |b| b.iter(|| plan_all(&f)));
}

criterion_group!(benches, bench);

fn mean(f: impl Fn() -> usize) -> Duration {
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    t.elapsed() / n
}

fn main() {
    benches();
    let f = files();
    let goal = Duration::from_millis(50);
    for (what, d) in [
        ("check", mean(|| check_all(&f))),
        ("plan", mean(|| plan_all(&f))),
    ] {
        println!(
            "{what} of {} pipelines: {:.2} ms (goal < 50 ms; {:.1}% of the goal)",
            f.len(),
            d.as_secs_f64() * 1e3,
            100.0 * d.as_secs_f64() / goal.as_secs_f64()
        );
    }
}
