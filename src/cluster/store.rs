//! A worker's partitions: values keyed by ticket (`<run>/<partition id>`), in
//! memory until the memory limit's spill threshold, then as Arrow IPC files
//! under the worker's data root.
//!
//! In: values a task produced or a client put. Out: the same values, read back
//! from memory or from the spill file. Must not: write anywhere but
//! `<data root>/spill`, or interpret values.

use crate::runtime::value::Value;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

enum Entry {
    Mem { value: Arc<Value>, seq: u64 },
    Spilled { path: PathBuf },
}

struct Held {
    entry: Entry,
    bytes: u64,
    rows: u64,
    schema: SchemaRef,
}

#[derive(Default)]
struct Inner {
    parts: BTreeMap<String, Held>,
    in_memory: u64,
    seq: u64,
    /// Bytes written to spill files, ever (for the heartbeat).
    spilled: u64,
}

/// What `list_flights` shows for one partition.
pub struct Listing {
    pub key: String,
    pub bytes: u64,
    pub rows: u64,
    pub schema: SchemaRef,
}

pub struct Store {
    inner: Mutex<Inner>,
    data_root: PathBuf,
    /// Bytes; 0 means no limit.
    memory_limit: u64,
    /// Print a line on stderr for each spill, naming this worker.
    log: Option<String>,
}

impl Store {
    pub fn new(data_root: PathBuf, memory_limit: u64) -> Self {
        Store {
            inner: Mutex::new(Inner::default()),
            data_root,
            memory_limit,
            log: None,
        }
    }

    /// Print `worker NAME: spilled KEY (N bytes) to PATH` on stderr for each spill.
    pub fn logging_spills(mut self, name: &str) -> Self {
        self.log = Some(name.to_string());
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put(&self, key: String, value: Value) -> Result<(), String> {
        let batch = value.to_batch().map_err(|e| e.to_string())?;
        let bytes = value.size_bytes() as u64;
        let held = Held {
            bytes,
            rows: value.rows() as u64,
            schema: batch.schema(),
            entry: Entry::Mem {
                value: Arc::new(value),
                seq: 0,
            },
        };
        let mut g = self.lock();
        g.seq += 1;
        let seq = g.seq;
        let held = Held {
            entry: match held.entry {
                Entry::Mem { value, .. } => Entry::Mem { value, seq },
                e => e,
            },
            ..held
        };
        if let Some(old) = g.parts.insert(key, held) {
            forget(&mut g, old);
        }
        g.in_memory += bytes;
        self.spill_if_needed(&mut g)
    }

    pub fn get(&self, key: &str) -> Result<Option<Arc<Value>>, String> {
        let path = {
            let g = self.lock();
            match g.parts.get(key) {
                None => return Ok(None),
                Some(Held {
                    entry: Entry::Mem { value, .. },
                    ..
                }) => return Ok(Some(value.clone())),
                Some(Held {
                    entry: Entry::Spilled { path },
                    ..
                }) => path.clone(),
            }
        };
        read_spilled(&path).map(|v| Some(Arc::new(v)))
    }

    pub fn remove(&self, key: &str) {
        let mut g = self.lock();
        if let Some(old) = g.parts.remove(key) {
            forget(&mut g, old);
        }
    }

    /// Forget every partition whose key starts with `prefix` (a run's).
    pub fn remove_prefix(&self, prefix: &str) {
        let mut g = self.lock();
        let keys: Vec<String> = g
            .parts
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for k in keys {
            if let Some(old) = g.parts.remove(&k) {
                forget(&mut g, old);
            }
        }
    }

    pub fn list(&self) -> Vec<Listing> {
        self.lock()
            .parts
            .iter()
            .map(|(k, h)| Listing {
                key: k.clone(),
                bytes: h.bytes,
                rows: h.rows,
                schema: h.schema.clone(),
            })
            .collect()
    }

    /// Bytes held in memory (not counting spilled partitions).
    pub fn memory_used(&self) -> u64 {
        self.lock().in_memory
    }

    /// Bytes written to spill files since the store was made.
    pub fn spilled_bytes(&self) -> u64 {
        self.lock().spilled
    }

    /// Partitions held, in memory or spilled.
    pub fn partitions(&self) -> usize {
        self.lock().parts.len()
    }

    /// Past the pause threshold: take no new tasks.
    pub fn paused(&self) -> bool {
        self.memory_limit > 0
            && self.memory_used() as f64 > self.memory_limit as f64 * super::PAUSE_FRACTION
    }

    /// Past the spill threshold, write the oldest in-memory partitions to Arrow
    /// IPC files until under it.
    fn spill_if_needed(&self, g: &mut Inner) -> Result<(), String> {
        if self.memory_limit == 0 {
            return Ok(());
        }
        let threshold = (self.memory_limit as f64 * super::SPILL_FRACTION) as u64;
        while g.in_memory > threshold {
            let oldest = g
                .parts
                .iter()
                .filter_map(|(k, h)| match &h.entry {
                    Entry::Mem { seq, .. } => Some((*seq, k.clone())),
                    Entry::Spilled { .. } => None,
                })
                .min();
            let Some((seq, key)) = oldest else {
                break;
            };
            let dir = self.data_root.join("spill");
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot spill: {e}"))?;
            let path = dir.join(format!("{seq}.arrow"));
            let Some(held) = g.parts.get_mut(&key) else {
                break;
            };
            if let Entry::Mem { value, .. } = &held.entry {
                write_spilled(&path, value)?;
            }
            let bytes = held.bytes;
            if let Some(name) = &self.log {
                eprintln!(
                    "worker {name}: spilled `{key}` ({bytes} bytes) to {}",
                    path.display()
                );
            }
            held.entry = Entry::Spilled { path };
            g.in_memory = g.in_memory.saturating_sub(bytes);
            g.spilled += bytes;
        }
        Ok(())
    }
}

fn forget(g: &mut Inner, old: Held) {
    match old.entry {
        Entry::Mem { .. } => g.in_memory = g.in_memory.saturating_sub(old.bytes),
        Entry::Spilled { path } => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn write_spilled(path: &std::path::Path, v: &Value) -> Result<(), String> {
    let batch = v.to_batch().map_err(|e| e.to_string())?;
    let file = std::fs::File::create(path).map_err(|e| format!("cannot spill: {e}"))?;
    let mut w = FileWriter::try_new(file, &batch.schema()).map_err(|e| e.to_string())?;
    w.write(&batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())
}

fn read_spilled(path: &std::path::Path) -> Result<Value, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read spill: {e}"))?;
    let r = FileReader::try_new(file, None).map_err(|e| e.to_string())?;
    let schema = r.schema();
    let batches: Vec<_> = r.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let batch = match batches.len() {
        1 => batches.into_iter().next().ok_or("empty spill file")?,
        _ => arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())?,
    };
    Value::from_batch(batch).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    #[test]
    fn spills_past_the_threshold_and_reads_back_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let batch = |n: i64| {
            Value::Batch(
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from(
                        (0..1000).map(|i| i * n).collect::<Vec<_>>(),
                    ))],
                )
                .unwrap(),
            )
        };
        let one = batch(1).size_bytes() as u64;
        let store = Store::new(dir.path().to_path_buf(), one * 2);
        for n in 0..4 {
            store.put(format!("r/p{n}"), batch(n)).unwrap();
        }
        assert!(
            store.memory_used() <= (one as f64 * 2.0 * super::super::SPILL_FRACTION) as u64 + one
        );
        assert!(dir.path().join("spill").read_dir().unwrap().count() > 0);
        assert!(
            store.spilled_bytes() >= 2 * one,
            "{}",
            store.spilled_bytes()
        );
        assert_eq!(store.partitions(), 4);
        for n in 0..4 {
            assert_eq!(*store.get(&format!("r/p{n}")).unwrap().unwrap(), batch(n));
        }
        store.remove_prefix("r/");
        assert!(store.list().is_empty());
        assert_eq!(dir.path().join("spill").read_dir().unwrap().count(), 0);
    }
}
