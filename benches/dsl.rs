//! dagml language front-end speed: parse a generated 10,000-statement file
//! (goal: under 100 ms), and parse + lower it to the model.
//!
//! Run: `cargo bench --bench dsl`. Prints criterion's figures and, at the end,
//! one line per measurement with the mean and the ratio to the goal.

use criterion::{Criterion, criterion_group};
use dagml::frontend::{self, dsl};
use std::time::{Duration, Instant};

/// 10,000 statements of every kind, with comments, lists, operations and expressions.
pub fn generate(statements: usize) -> String {
    let mut s =
        String::from("# generated\npipeline big (seed = 7, description = \"a large pipeline\")\n");
    let mut n = 1;
    let mut i = 0;
    while n < statements {
        let stmts = [
            format!(
                "src{i} = load csv(\"data/part{i}.csv\", na_values = [\"NA\", \"\"], columns = {{price = float}})  # source {i}\n"
            ),
            format!(
                "t{i} = transform src{i} [\n    derive y = log(price + {i}) * 2 - abs(x)\n    filter y > 0 and not is_null(x)\n    drop [id, price]\n]\n"
            ),
            format!("s{i} = split t{i} holdout(test_fraction = 0.25, stratify = y, seed = {i})\n"),
            format!(
                "m{i} = fit random_forest(n_trees = 10, max_features = \"sqrt\") on s{i}.train target y features [x, z] preprocess [impute(strategy = median), standard_scale]\n"
            ),
            format!("e{i} = evaluate m{i} on s{i}.train, s{i}.test [accuracy, f1]\n"),
            format!("o{i} = save predictions of m{i} on s{i}.test to \"out/p{i}.parquet\"\n"),
        ];
        for st in stmts {
            if n >= statements {
                break;
            }
            s.push_str(&st);
            n += 1;
        }
        i += 1;
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = generate(10_000);
    c.bench_function("parse 10,000 dagml statements", |b| {
        b.iter(|| dsl::parse(&text).1.len())
    });
    c.bench_function("parse and lower 10,000 dagml statements", |b| {
        b.iter(|| frontend::parse_str("big.dagml", &text).diagnostics.len())
    });
}

criterion_group!(benches, bench);

fn mean(f: impl Fn() -> usize) -> Duration {
    let n = 20;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    t.elapsed() / n
}

fn main() {
    benches();
    let text = generate(10_000);
    let (_, diags) = dsl::parse(&text);
    assert!(
        diags.is_empty(),
        "the generated file has errors: {:?}",
        &diags[..1]
    );
    let goal = Duration::from_millis(100);
    for (what, d) in [
        ("parse", mean(|| dsl::parse(&text).1.len())),
        (
            "parse + lower",
            mean(|| frontend::parse_str("big.dagml", &text).diagnostics.len()),
        ),
    ] {
        println!(
            "{what} of 10,000 statements ({} KB): {:.2} ms (goal < 100 ms; {:.1}% of the goal)",
            text.len() / 1024,
            d.as_secs_f64() * 1e3,
            100.0 * d.as_secs_f64() / goal.as_secs_f64()
        );
    }
}
