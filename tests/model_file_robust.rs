//! Damaged model files (issue 12, item 1): a model file with bytes changed or
//! cut off is refused with a clean error, or (if the change touched nothing the
//! model reads) predicts exactly what the original predicts; it never panics
//! and never hangs. A second property re-seals the checksum after the change,
//! as a file written wrong would be, so the structural validation (child
//! indices, features, leaf values, class counts) is what stands between the
//! bytes and the tree walk.
//!
//! The models are fitted once, by a real run of a small pipeline (a forest and a
//! logistic regression), into a temporary folder.

use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use dagml::ml::model::{Model, Prediction};
use dagml::ml::model_file;
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const ROWS: usize = 240;

fn rows() -> RecordBatch {
    let col = |k: usize| -> Vec<f64> {
        (0..ROWS)
            .map(|i| ((i * (7 + 3 * k) + k * 11) % 97) as f64 / 9.7)
            .collect()
    };
    let cols: Vec<Vec<f64>> = (0..4).map(col).collect();
    let y: Vec<&str> = (0..ROWS)
        .map(|i| match (cols[0][i] + cols[1][i] - cols[2][i]) as i64 {
            i64::MIN..=2 => "low",
            3..=8 => "mid",
            _ => "high",
        })
        .collect();
    let mut fields: Vec<Field> = (0..4)
        .map(|k| Field::new(format!("x{k}"), DataType::Float64, true))
        .collect();
    fields.push(Field::new("y", DataType::Utf8, true));
    let mut arrays: Vec<ArrayRef> = cols
        .into_iter()
        .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef)
        .collect();
    arrays.push(Arc::new(StringArray::from(y)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("a batch")
}

struct Fitted {
    files: Vec<Vec<u8>>,
    batch: RecordBatch,
    _dir: tempfile::TempDir,
}

fn fitted() -> &'static Fitted {
    static F: OnceLock<Fitted> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let batch = rows();
        let mut csv = Vec::new();
        arrow::csv::Writer::new(&mut csv)
            .write(&batch)
            .expect("csv");
        std::fs::write(dir.path().join("rows.csv"), csv).expect("write rows");
        let pipeline = dir.path().join("p.toml");
        std::fs::write(
            &pipeline,
            r#"
[pipeline]
name = "damaged"
seed = 3

[sources.rows]
kind = "csv"
path = "rows.csv"

[splits.holdout]
kind = "holdout"
input = "rows"
test_fraction = 0.25

[models.forest]
estimator = "random_forest"
input = "holdout.train"
target = "y"
params = { n_trees = 3, max_depth = 6 }

[models.logreg]
estimator = "logistic_regression"
input = "holdout.train"
target = "y"
preprocess = [{ op = "standard_scale" }]

[evaluations.scores]
model = "forest"
data = ["holdout.test"]
metrics = ["accuracy"]

[outputs.forest_file]
kind = "model"
model = "forest"
path = "forest.model"

[outputs.logreg_file]
kind = "model"
model = "logreg"
path = "logreg.model"
"#,
        )
        .expect("write the pipeline");
        let opts = dagml::run::RunOptions {
            threads: Some(1),
            quiet: true,
            base: dir.path().to_path_buf(),
        };
        dagml::run::run_file(&pipeline, &opts, &dagml::runtime::executor::Quiet)
            .unwrap_or_else(|e| panic!("the pipeline runs: {e}"));
        let files = ["forest.model", "logreg.model"]
            .iter()
            .map(|f| std::fs::read(dir.path().join(f)).expect("a model file"))
            .collect();
        Fitted {
            files,
            batch,
            _dir: dir,
        }
    })
}

/// Read and predict on another thread, with a deadline: `None` is a hang.
fn outcome(bytes: Vec<u8>) -> Option<Result<Prediction, String>> {
    let batch = fitted().batch.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (header, model) = model_file::read(&bytes).map_err(|e| e.to_string())?;
            let b = model_file::conform(&header.features, &batch).map_err(|e| e.to_string())?;
            model.predict(&b).map_err(|e| e.to_string())
        }));
        let _ = tx.send(r.unwrap_or_else(|_| Err("PANIC".into())));
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

fn original(which: usize) -> &'static Prediction {
    static P: OnceLock<Vec<Prediction>> = OnceLock::new();
    &P.get_or_init(|| {
        fitted()
            .files
            .iter()
            .map(|f| {
                outcome(f.clone())
                    .expect("no hang")
                    .expect("the undamaged file predicts")
            })
            .collect()
    })[which]
}

#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, bits: u8 },
    Set { at: usize, to: u8 },
    Truncate { keep: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Damage::Flip { at, bits }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, to)| Damage::Set { at, to }),
        any::<usize>().prop_map(|keep| Damage::Truncate { keep }),
    ]
}

fn apply(file: &[u8], d: &Damage) -> Vec<u8> {
    let mut b = file.to_vec();
    match *d {
        Damage::Flip { at, bits } => {
            let i = at % b.len();
            b[i] ^= bits;
        }
        Damage::Set { at, to } => {
            let i = at % b.len();
            b[i] = to;
        }
        Damage::Truncate { keep } => b.truncate(keep % b.len()),
    }
    b
}

/// Recompute the trailer, as a writer with a bug would have.
fn reseal(mut b: Vec<u8>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    if b.len() < 32 {
        return b;
    }
    let n = b.len() - 32;
    let sum: [u8; 32] = Sha256::digest(&b[..n]).into();
    b[n..].copy_from_slice(&sum);
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_model_file_is_refused_or_predicts_as_the_original(
        which in 0usize..2, d in damage()
    ) {
        let bytes = apply(&fitted().files[which], &d);
        let unchanged = bytes == fitted().files[which];
        match outcome(bytes) {
            None => prop_assert!(false, "hang after {d:?}"),
            Some(Err(e)) => {
                prop_assert!(e != "PANIC", "panic after {d:?}");
                prop_assert!(!unchanged, "the undamaged file was refused: {e}");
            }
            Some(Ok(p)) => prop_assert_eq!(&p, original(which), "{:?} changed the predictions", d),
        }
    }

    #[test]
    fn a_resealed_damaged_model_file_never_panics_or_hangs(
        which in 0usize..2, d in damage(), more in proptest::collection::vec(damage(), 0..4)
    ) {
        let mut bytes = apply(&fitted().files[which], &d);
        for m in &more {
            if !bytes.is_empty() {
                bytes = apply(&bytes, m);
            }
        }
        match outcome(reseal(bytes)) {
            None => prop_assert!(false, "hang after {d:?} {more:?}"),
            Some(Err(e)) => prop_assert!(e != "PANIC", "panic after {d:?} {more:?}"),
            Some(Ok(p)) => prop_assert_eq!(p.rows(), ROWS),
        }
    }
}

#[test]
fn a_model_file_with_one_byte_changed_is_refused_as_damaged() {
    let mut b = fitted().files[0].clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    let e = model_file::read(&b).expect_err("a damaged file");
    assert!(matches!(e, model_file::ModelFileError::Checksum), "{e}");
    assert!(e.to_string().contains("damaged"), "{e}");
}

#[test]
fn predict_refuses_text_in_a_float_column_naming_the_line() {
    let dir = fitted()._dir.path();
    let input = dir.join("text_in_x1.csv");
    std::fs::write(&input, "x0,x1,x2,x3\n1.0,2.0,3.0,4.0\n1.5,two,3.5,4.5\n").expect("write");
    let out = dir.join("never.csv");
    let e = dagml::predict::predict_file(&dir.join("forest.model"), &input, &out)
        .expect_err("text where the model reads numbers")
        .to_string();
    assert!(
        e.contains("line 3") && e.contains("`x1`") && e.contains("`two`") && e.contains("Float64"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written");
    // Integers where the model reads Float64 convert without loss.
    std::fs::write(&input, "x0,x1,x2,x3\n1,2,3,4\n").expect("write");
    let rows = dagml::predict::predict_file(&dir.join("forest.model"), &input, &out)
        .expect("integers are floats");
    assert_eq!(rows, 1);
}
