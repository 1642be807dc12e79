//! Fit mnist_rf's trees with dagml's own `fit_tree` (src/ml/tree.rs, compiled
//! in here unchanged) on the 60,000 MNIST training rows, one thread, and print
//! the fit's CPU time and a hash of the trees (equal hashes: equal trees).
//!
//! In: `data/mnist/train-*-ubyte.gz` (run from the repository root), the
//! number of trees and the first tree's index. Out: one line on stdout. Must not: differ from the pipeline's
//! draw: tree `t` gets the seed, model id and bootstrap `fit_tree_range` gives
//! it (seed 42, model `forest`, sqrt(784) = 28 features, gini).
//!
//! ```sh
//! cargo run --release --manifest-path bench/tree_fit/Cargo.toml -- 6 30
//! valgrind --tool=callgrind --toggle-collect='*fit_tree*' bench/tree_fit/target/release/tree_fit 2 10
//! ```

#![allow(dead_code)] // tree.rs is compiled whole; only the classification fit is used here.

#[path = "../../../src/data/rng.rs"]
pub mod rng;
mod data {
    pub use super::rng;
}
mod ml {
    pub mod bins;
    #[path = "../../../../src/ml/tree.rs"]
    pub mod tree;
}

use data::rng::{SeededRng, str_id};
use ml::bins::Binned;
use ml::tree::{Criterion, Target, TreeConfig, fit_tree};
use std::hash::{Hash, Hasher};

/// This thread's CPU seconds so far (Linux).
fn cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()))
        .map_or(0.0, |ns| ns / 1e9)
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e} (run from the repository root)"))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(out)
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u32| -> Result<u32, String> {
        args.get(i)
            .map_or(Ok(d), |s| s.parse().map_err(|e| format!("argument {i}: {e}")))
    };
    let (ntrees, first) = (arg(1, 6)?, arg(2, 0)?);
    let img = read("data/mnist/train-images-idx3-ubyte.gz")?;
    let lab = read("data/mnist/train-labels-idx1-ubyte.gz")?;
    let (n, d) = (60000usize, 784usize);
    if img.len() < 16 + n * d || lab.len() < 8 + n {
        return Err("the MNIST training files are shorter than 60,000 rows".into());
    }
    let px = &img[16..];
    let y: Vec<u32> = lab[8..8 + n].iter().map(|&v| u32::from(v)).collect();
    // The UInt8 fast path of bins::fit: each present value its own code, in order.
    let mut codes = vec![0u8; n * d];
    for j in 0..d {
        let mut seen = [false; 256];
        for r in 0..n {
            seen[px[r * d + j] as usize] = true;
        }
        let mut rank = [0u8; 256];
        let mut k = 0u8;
        for v in 0..256 {
            if seen[v] {
                rank[v] = k;
                k = k.wrapping_add(1);
            }
        }
        for r in 0..n {
            codes[j * n + r] = rank[px[r * d + j] as usize];
        }
    }
    let b = Binned { rows: n, cols: d, codes, row_major: Vec::new() }.with_row_major();
    let cfg = TreeConfig {
        criterion: Criterion::Gini,
        max_depth: None,
        min_samples_split: 2,
        min_samples_leaf: 1,
        max_features: 28,
    };
    let model_id = str_id("forest");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let (mut nodes, mut spent) = (0usize, 0.0f64);
    for t in first..first + ntrees {
        let mut r = SeededRng::new(42, &[model_id, u64::from(t)]);
        let mut w = vec![0.0f32; n];
        for _ in 0..n {
            w[r.below(n)] += 1.0;
        }
        let c0 = cpu();
        let tree = fit_tree(&b, Target::Classes(&y, 10), &w, &cfg, &mut r);
        spent += cpu() - c0;
        nodes += tree.nodes.len();
        format!("{tree:?}").hash(&mut h);
    }
    println!(
        "{ntrees} trees from {first}: fit {spent:.3} s of CPU, {nodes} nodes, trees hash {:016x}",
        h.finish()
    );
    Ok(())
}
