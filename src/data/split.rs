//! Splits: holdout (optionally stratified), predefined, k-fold and shards.
//!
//! In: a [`Split`], the pipeline seed and the input partitions in order (their
//! concatenation defines each row's identity: its global position). Out: one batch
//! per [`Part`]. Must not: depend on how the rows were partitioned or on thread
//! counts: a row's side is decided by hash(seed, split, row identity) alone.
//! (Shards by file are the one split defined by partitions: input partition i is
//! file i, listed in order before the run.)

use super::{DataError, rng};
use crate::frontend::pipeline::{ShardBy, Split, SplitKind};
use arrow::array::{Array, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A part of a split: its name in references and ids is [`Part::label`].
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Part {
    Train,
    Test,
    Fold(u32),
    /// A whole shard.
    Shard(String),
    ShardTrain(String),
    ShardValidation(String),
}

impl Part {
    pub fn label(&self) -> String {
        match self {
            Part::Train => "train".into(),
            Part::Test => "test".into(),
            Part::Fold(i) => format!("fold{i}"),
            Part::Shard(s) => s.clone(),
            Part::ShardTrain(s) => format!("{s}.train"),
            Part::ShardValidation(s) => format!("{s}.validation"),
        }
    }
}

fn take(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch, DataError> {
    let idx = UInt32Array::from(rows.to_vec());
    Ok(take_record_batch(batch, &idx)?)
}

/// Group rows by the text of a column (nulls in their own group), in row order.
fn groups(batch: &RecordBatch, column: &str) -> Result<BTreeMap<String, Vec<u32>>, DataError> {
    let a = batch
        .column_by_name(column)
        .ok_or_else(|| DataError::MissingColumn(column.into()))?;
    let s = cast(a, &DataType::Utf8)?;
    let s = s
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .ok_or_else(|| DataError::MissingColumn(column.into()))?;
    let mut m: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in 0..s.len() {
        let k = if s.is_null(i) {
            "\u{0}null".to_string()
        } else {
            s.value(i).to_string()
        };
        m.entry(k).or_default().push(i as u32);
    }
    Ok(m)
}

/// Rows ordered by their hash key (the random permutation every split uses).
fn by_key(rows: &mut [u32], seed: u64) {
    rows.sort_by_key(|&r| (rng::hash(seed, &[r as u64]), r));
}

/// Split `rows` into (kept, held out) with `fraction` of them held out, rounding
/// the held-out count up like scikit-learn's `train_test_split`.
fn hold_out(mut rows: Vec<u32>, fraction: f64, seed: u64) -> (Vec<u32>, Vec<u32>) {
    by_key(&mut rows, seed);
    let n_out = ((rows.len() as f64) * fraction).ceil() as usize;
    let n_out = n_out.min(rows.len());
    let mut out = rows[..n_out].to_vec();
    let mut kept = rows[n_out..].to_vec();
    out.sort_unstable();
    kept.sort_unstable();
    (kept, out)
}

fn stratified_hold_out(
    batch: &RecordBatch,
    column: Option<&str>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<u32>, Vec<u32>), DataError> {
    let all: Vec<u32> = (0..batch.num_rows() as u32).collect();
    let Some(col) = column else {
        return Ok(hold_out(all, fraction, seed));
    };
    let (mut kept, mut out) = (Vec::new(), Vec::new());
    for (_, rows) in groups(batch, col)? {
        let (k, o) = hold_out(rows, fraction, seed);
        kept.extend(k);
        out.extend(o);
    }
    kept.sort_unstable();
    out.sort_unstable();
    Ok((kept, out))
}

/// Run a split over its inputs. `inputs` are (dataset name, batch), one per
/// input partition in task order; for a predefined split from two datasets, the
/// name says which rows are the train ones.
pub fn split(
    split: &Split,
    pipeline_seed: u64,
    inputs: &[(String, RecordBatch)],
) -> Result<BTreeMap<Part, RecordBatch>, DataError> {
    let name_id = rng::str_id(&split.name.value);
    let seed_of = |s: Option<u64>| rng::hash(s.unwrap_or(pipeline_seed), &[name_id]);
    let whole = || -> Result<RecordBatch, DataError> {
        let Some((_, first)) = inputs.first() else {
            return Err(DataError::Unsupported("a split with no input".into()));
        };
        let batches: Vec<RecordBatch> = inputs.iter().map(|(_, b)| b.clone()).collect();
        Ok(concat_batches(&first.schema(), &batches)?)
    };
    let mut out = BTreeMap::new();
    match &split.kind {
        SplitKind::Holdout {
            test_fraction,
            stratify,
            seed,
            ..
        } => {
            let b = whole()?;
            let (train, test) = stratified_hold_out(
                &b,
                stratify.as_ref().map(|s| s.value.as_str()),
                test_fraction.value,
                seed_of(*seed),
            )?;
            out.insert(Part::Train, take(&b, &train)?);
            out.insert(Part::Test, take(&b, &test)?);
        }
        SplitKind::Predefined { from } => {
            use crate::frontend::pipeline::PredefinedFrom;
            let (train, test): (Vec<&RecordBatch>, Vec<&RecordBatch>) = match from {
                // A source that carries both (MNIST): partition 0 is train, 1 is test.
                PredefinedFrom::Source(_) => {
                    if inputs.len() != 2 {
                        return Err(DataError::Unsupported(format!(
                            "a predefined split needs a source with train and test parts (got {} partitions)",
                            inputs.len()
                        )));
                    }
                    (vec![&inputs[0].1], vec![&inputs[1].1])
                }
                PredefinedFrom::Pair { train, .. } => {
                    let (a, b): (Vec<_>, Vec<_>) =
                        inputs.iter().partition(|(name, _)| *name == train.value);
                    (
                        a.into_iter().map(|x| &x.1).collect(),
                        b.into_iter().map(|x| &x.1).collect(),
                    )
                }
            };
            for (part, bs) in [(Part::Train, train), (Part::Test, test)] {
                let Some(first) = bs.first() else {
                    return Err(DataError::Unsupported(format!(
                        "the predefined split has no {} data",
                        part.label()
                    )));
                };
                let owned: Vec<RecordBatch> = bs.iter().map(|b| (*b).clone()).collect();
                out.insert(part, concat_batches(&first.schema(), &owned)?);
            }
        }
        SplitKind::KFold {
            k,
            stratify,
            shuffle,
            seed,
            ..
        } => {
            let b = whole()?;
            let k = k.value.max(1);
            let mut folds: Vec<Vec<u32>> = vec![Vec::new(); k as usize];
            let groups: Vec<Vec<u32>> = match stratify {
                Some(c) => groups(&b, &c.value)?.into_values().collect(),
                None => vec![(0..b.num_rows() as u32).collect()],
            };
            for mut rows in groups {
                if *shuffle {
                    by_key(&mut rows, seed_of(*seed));
                }
                for (i, r) in rows.into_iter().enumerate() {
                    folds[i % k as usize].push(r);
                }
            }
            for (i, mut f) in folds.into_iter().enumerate() {
                f.sort_unstable();
                out.insert(Part::Fold(i as u32 + 1), take(&b, &f)?);
            }
        }
        SplitKind::Shards {
            by,
            validation_fraction,
            seed,
            ..
        } => {
            let b = whole()?;
            let n = b.num_rows() as u32;
            let shards: Vec<(String, Vec<u32>)> = match by {
                ShardBy::Rows { names } => {
                    let k = names.len().max(1) as u32;
                    names
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            let (start, len) =
                                super::synthetic::partition_rows(n as u64, k, i as u32);
                            (
                                s.value.clone(),
                                (start as u32..(start + len) as u32).collect(),
                            )
                        })
                        .collect()
                }
                ShardBy::Column { column, names } => {
                    let mut g = groups(&b, &column.value)?;
                    if names.is_empty() {
                        g.into_iter().collect()
                    } else {
                        names
                            .iter()
                            .map(|s| (s.value.clone(), g.remove(&s.value).unwrap_or_default()))
                            .collect()
                    }
                }
                ShardBy::File { names } | ShardBy::Worker { names } => {
                    // One input partition per file (per worker), in the order
                    // the files (workers) were listed.
                    if names.len() != inputs.len() {
                        return Err(DataError::Unsupported(format!(
                            "a split by file got {} partitions for {} files",
                            inputs.len(),
                            names.len()
                        )));
                    }
                    let mut start = 0u32;
                    names
                        .iter()
                        .zip(inputs)
                        .map(|(s, (_, part))| {
                            let len = part.num_rows() as u32;
                            start += len;
                            (s.value.clone(), (start - len..start).collect())
                        })
                        .collect()
                }
            };
            // Shards named by column values nobody listed are known only now:
            // they travel together, as one batch per part tagged with its shards.
            let dynamic = matches!(by, ShardBy::Column { names, .. } if names.is_empty());
            let mut tagged: [Vec<(String, RecordBatch)>; 3] = Default::default();
            for (name, rows) in shards {
                let shard_seed = rng::hash(seed_of(*seed), &[rng::str_id(&name)]);
                let (train, val) = hold_out(rows.clone(), validation_fraction.value, shard_seed);
                let three = [take(&b, &rows)?, take(&b, &train)?, take(&b, &val)?];
                if dynamic {
                    for (t, x) in tagged.iter_mut().zip(three) {
                        t.push((name.clone(), x));
                    }
                } else {
                    let [all, train, val] = three;
                    out.insert(Part::Shard(name.clone()), all);
                    out.insert(Part::ShardTrain(name.clone()), train);
                    out.insert(Part::ShardValidation(name), val);
                }
            }
            if dynamic {
                let [all, train, val] = tagged;
                let any = ANY_SHARD.to_string();
                out.insert(Part::Shard(any.clone()), tag_shards(&b, all)?);
                out.insert(Part::ShardTrain(any.clone()), tag_shards(&b, train)?);
                out.insert(Part::ShardValidation(any), tag_shards(&b, val)?);
            }
        }
    }
    Ok(out)
}

/// The shard name that stands for every shard of a split whose shards are known
/// only from the data (`by = "column"` without `names`).
pub const ANY_SHARD: &str = "*";

/// Schema metadata key of a batch holding several shards: JSON `[[name, rows], ...]`.
const SHARDS_KEY: &str = "dagml.shards";

/// Several shards in one batch, in order, their names and sizes in its schema.
fn tag_shards(
    like: &RecordBatch,
    shards: Vec<(String, RecordBatch)>,
) -> Result<RecordBatch, DataError> {
    let sizes: Vec<(&str, usize)> = shards
        .iter()
        .map(|(n, b)| (n.as_str(), b.num_rows()))
        .collect();
    let meta = serde_json::to_string(&sizes)
        .map_err(|e| DataError::Unsupported(format!("shard list: {e}")))?;
    let schema = Arc::new(like.schema().as_ref().clone().with_metadata(
        std::collections::HashMap::from([(SHARDS_KEY.to_string(), meta)]),
    ));
    let batches: Vec<RecordBatch> = shards.into_iter().map(|(_, b)| b).collect();
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// The shards of a batch made by a split whose shards are known only from the
/// data, by name, in order; `None` for any other batch.
pub fn untag_shards(b: &RecordBatch) -> Result<Option<Vec<(String, RecordBatch)>>, DataError> {
    let schema = b.schema();
    let Some(meta) = schema.metadata().get(SHARDS_KEY) else {
        return Ok(None);
    };
    let sizes: Vec<(String, usize)> = serde_json::from_str(meta)
        .map_err(|e| DataError::Unsupported(format!("corrupt shard list: {e}")))?;
    if sizes.iter().map(|(_, n)| n).sum::<usize>() != b.num_rows() {
        return Err(DataError::Unsupported(
            "the shard list does not match the rows".into(),
        ));
    }
    let plain = Arc::new(
        schema
            .as_ref()
            .clone()
            .with_metadata(std::collections::HashMap::new()),
    );
    let b = RecordBatch::try_new(plain, b.columns().to_vec())?;
    let mut at = 0;
    Ok(Some(
        sizes
            .into_iter()
            .map(|(name, n)| {
                let part = b.slice(at, n);
                at += n;
                (name, part)
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::span::{Span, Spanned};
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn s<T>(v: T) -> Spanned<T> {
        Spanned::new(v, Span::new(0, 0))
    }

    fn data(rows: i64) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("y", DataType::Int64, false),
            ])),
            vec![
                Arc::new(Int64Array::from((0..rows).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(
                    (0..rows)
                        .map(|i| i64::from(i % 10 == 0))
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn holdout(stratify: bool) -> Split {
        Split {
            name: s("h".into()),
            span: Span::new(0, 0),
            kind: SplitKind::Holdout {
                input: s("d".into()),
                test_fraction: s(0.2),
                stratify: stratify.then(|| s("y".into())),
                seed: None,
            },
        }
    }

    fn ids(b: &RecordBatch) -> Vec<i64> {
        b.column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[test]
    fn holdout_does_not_depend_on_partitioning() {
        let b = data(1000);
        let one = split(&holdout(false), 42, &[("d".into(), b.clone())]).unwrap();
        let parts = vec![
            ("d".to_string(), b.slice(0, 300)),
            ("d".to_string(), b.slice(300, 700)),
        ];
        let two = split(&holdout(false), 42, &parts).unwrap();
        assert_eq!(one, two);
        assert_eq!(one[&Part::Test].num_rows(), 200);
        let other_seed = split(&holdout(false), 43, &[("d".into(), b)]).unwrap();
        assert_ne!(ids(&one[&Part::Test]), ids(&other_seed[&Part::Test]));
    }

    #[test]
    fn stratified_holdout_keeps_class_proportions() {
        let out = split(&holdout(true), 1, &[("d".into(), data(1000))]).unwrap();
        let test = &out[&Part::Test];
        let y = test
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let ones = y.values().iter().filter(|v| **v == 1).count();
        assert_eq!(ones, 20, "10% of the 200 test rows");
    }

    #[test]
    fn shards_by_rows_are_contiguous_with_validation_parts() {
        let sp = Split {
            name: s("sh".into()),
            span: Span::new(0, 0),
            kind: SplitKind::Shards {
                input: s("d".into()),
                by: ShardBy::Rows {
                    names: vec![s("A".into()), s("B".into())],
                },
                validation_fraction: s(0.25),
                seed: None,
            },
        };
        let out = split(&sp, 1, &[("d".into(), data(100))]).unwrap();
        assert_eq!(
            ids(&out[&Part::Shard("A".into())]),
            (0..50).collect::<Vec<_>>()
        );
        assert_eq!(out[&Part::ShardValidation("B".into())].num_rows(), 13);
        assert_eq!(out[&Part::ShardTrain("B".into())].num_rows(), 37);
    }
}
