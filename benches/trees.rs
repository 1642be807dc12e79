//! Why dagml has its own trees: one decision tree (gini, unlimited depth, every
//! feature considered at each split) on the first N MNIST training digits, fitted
//! by linfa-trees 0.8 and by `dagml::ml::tree`, with the time of each, the ratio
//! and both training accuracies. Then ours alone on all 60,000 rows.
//!
//! `cargo bench --bench trees [-- N]` (default N = 2000; linfa's time grows
//! quickly with N: one tree on all of MNIST took it about 30 minutes here).

use arrow::array::AsArray;
use arrow::datatypes::UInt8Type;
use dagml::data::idx::{self, Part};
use dagml::data::rng::SeededRng;
use dagml::ml::bins;
use dagml::ml::tree::{self, Criterion, Target, TreeConfig};
use linfa::prelude::*;
use std::path::Path;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let batch = match idx::read(&dir, Part::Train) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read MNIST: {e}");
            std::process::exit(1);
        }
    };
    let features: Vec<String> = (0..784).map(|i| format!("pixel{i}")).collect();
    let labels: Vec<u32> = batch
        .column_by_name("label")
        .map(|a| {
            a.as_primitive::<UInt8Type>()
                .values()
                .iter()
                .map(|&v| v as u32)
                .collect()
        })
        .unwrap_or_default();
    let sub = batch.slice(0, n);

    // linfa-trees on f64 pixels.
    let mut x = ndarray::Array2::<f64>::zeros((n, 784));
    for (j, f) in features.iter().enumerate() {
        if let Some(a) = sub.column_by_name(f) {
            for (i, &v) in a.as_primitive::<UInt8Type>().values().iter().enumerate() {
                x[[i, j]] = v as f64;
            }
        }
    }
    let y = ndarray::Array1::from_iter(labels[..n].iter().map(|&v| v as usize));
    let data = linfa::Dataset::new(x, y);
    let t0 = Instant::now();
    let linfa_tree = linfa_trees::DecisionTree::params()
        .max_depth(None)
        .fit(&data)
        .expect("linfa fits");
    let linfa_s = t0.elapsed().as_secs_f64();
    let pred = linfa_tree.predict(&data);
    let linfa_acc = pred
        .iter()
        .zip(data.targets())
        .filter(|(a, b)| a == b)
        .count() as f64
        / n as f64;

    // Ours, same rows, binned once (binning included in the time).
    let cfg = TreeConfig {
        criterion: Criterion::Gini,
        max_depth: None,
        min_samples_split: 2,
        min_samples_leaf: 1,
        max_features: 784,
    };
    let t0 = Instant::now();
    let (_, binned) = bins::fit(&sub, &features, 256).expect("binning");
    let ours = tree::fit_tree(
        &binned,
        Target::Classes(&labels[..n], 10),
        &vec![1.0; n],
        &cfg,
        &mut SeededRng::new(42, &[]),
    );
    let ours_s = t0.elapsed().as_secs_f64();
    let ours_acc = (0..n)
        .filter(|&i| {
            let p = ours.leaf(&binned, i);
            let best = (0..p.len())
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .unwrap_or(0);
            best as u32 == labels[i]
        })
        .count() as f64
        / n as f64;

    println!("one decision tree, gini, unlimited depth, all 784 features, {n} MNIST rows");
    println!("  linfa-trees 0.8  {linfa_s:9.3} s   training accuracy {linfa_acc:.4}");
    println!("  dagml            {ours_s:9.3} s   training accuracy {ours_acc:.4}");
    println!("  ratio linfa / dagml: {:.1}x", linfa_s / ours_s.max(1e-9));

    let rows = batch.num_rows();
    let t0 = Instant::now();
    let (_, all) = bins::fit(&batch, &features, 256).expect("binning");
    let full = tree::fit_tree(
        &all,
        Target::Classes(&labels, 10),
        &vec![1.0; rows],
        &cfg,
        &mut SeededRng::new(42, &[]),
    );
    println!(
        "dagml alone, all {rows} rows: {:.3} s, {} leaves, depth {}",
        t0.elapsed().as_secs_f64(),
        full.leaves(),
        full.depth()
    );
}
