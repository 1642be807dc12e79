//! Shard models resident on a worker, for serving: each per-shard model a
//! serving run fits here stays here after the run, answers `ServeInfer`, and
//! is replaced by the next version fitted here (a retraining) in one swap.
//! With a data root, each one is also kept in a file under
//! `DATA_ROOT/serving/WORKER/` (workers may share a data root), so a worker
//! that restarts under its name serves again what it served.
//!
//! In: shard models fitted here (`runtime::kernels::ShardModel`); batches to
//! predict. Out: per-shard predictions, each with the version that made it;
//! the list of what is resident with its version history.
//! Must not: answer one request with two versions of a shard; drop the old
//! version before the new one is in place; hold the registry's lock while
//! writing a file; panic or stop on a damaged file (it is skipped, and said
//! so).

use crate::frontend::pipeline::Combine;
use crate::ml::model::{Model, Prediction, TrainedModel};
use crate::ml::model_file::{self, ModelHeader};
use crate::runtime::kernels::ShardModel;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Versions kept in a shard model's history.
const HISTORY: usize = 50;

/// One version of a shard model, as the history lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub run_id: String,
    /// Seconds since the Unix epoch.
    pub fitted_at: u64,
    /// First 12 hex digits of the SHA-256 of the member's model file.
    pub sha: String,
}

/// A resident shard model.
pub struct Held {
    pub model: String,
    pub shard: String,
    pub index: u32,
    pub combine: Combine,
    pub header: ModelHeader,
    pub trained: TrainedModel,
    /// Oldest first; the last one is this.
    pub history: Vec<VersionRecord>,
}

impl Held {
    pub fn version(&self) -> u64 {
        self.history.last().map_or(0, |r| r.version)
    }
}

/// What a file under `serving/` holds: the metadata, then the model file.
#[derive(Serialize, Deserialize)]
struct Saved {
    model: String,
    shard: String,
    index: u32,
    combine: Combine,
    history: Vec<VersionRecord>,
    file: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResidentError {
    #[error("cannot write `{0}`: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("model `{0}` has no shard model on this worker")]
    NoModel(String),
    #[error("shard model `{0}[{1}]` cannot predict this batch: {2}")]
    Predict(String, String, String),
    #[error("the shard model's file does not read back: {0}")]
    Model(String),
}

/// The shard models resident on one worker.
pub struct Resident {
    /// `DATA_ROOT/serving/WORKER`, when the worker has a data root.
    dir: Option<PathBuf>,
    held: RwLock<BTreeMap<(String, String), Arc<Held>>>,
    /// Installs one at a time (each reads the history it extends), without
    /// holding `held` while the file is written.
    installing: Mutex<()>,
}

/// A file-name-safe form of a model or shard name: itself when it is made of
/// letters, digits, `_` and `-`; otherwise `x` and its bytes in hex.
fn file_part(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_string()
    } else {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{hex}")
    }
}

fn sha12(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Resident {
    /// An empty registry, kept in memory only.
    pub fn in_memory() -> Resident {
        Resident {
            dir: None,
            held: RwLock::default(),
            installing: Mutex::new(()),
        }
    }

    /// The registry under `data_root/serving/worker`, with what an earlier
    /// run of this worker left there. A file that does not read back is
    /// skipped, with a line on stderr naming it.
    pub fn open(data_root: &Path, worker: &str) -> Resident {
        let dir = data_root.join("serving").join(file_part(worker));
        let mut held = BTreeMap::new();
        for path in files_under(&dir) {
            match load(&path) {
                Ok(h) => {
                    held.insert((h.model.clone(), h.shard.clone()), Arc::new(h));
                }
                Err(e) => eprintln!(
                    "dagml worker: skipping the served model `{}`: {e}",
                    path.display()
                ),
            }
        }
        Resident {
            dir: Some(dir),
            held: RwLock::new(held),
            installing: Mutex::new(()),
        }
    }

    /// Put a newly fitted shard model in place of the one it replaces, as
    /// version `version` (0: the one after the replaced one's); returns the
    /// version. The file is written before the swap, so a failed write leaves
    /// the old version answering.
    pub fn install(&self, m: ShardModel, run_id: &str, version: u64) -> Result<u64, ResidentError> {
        // The header alone (checked with the file's checksum): the model
        // itself is `m.trained`.
        let (header, _) =
            model_file::decode(&m.file).map_err(|e| ResidentError::Model(e.to_string()))?;
        let key = (m.model.clone(), m.shard.clone());
        let _one = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        let mut history = self
            .held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .map(|h| h.history.clone())
            .unwrap_or_default();
        let after = history.last().map_or(0, |r| r.version) + 1;
        let version = if version == 0 { after } else { version };
        history.push(VersionRecord {
            version,
            run_id: run_id.to_string(),
            fitted_at: now_secs(),
            sha: sha12(&m.file),
        });
        if history.len() > HISTORY {
            history.drain(..history.len() - HISTORY);
        }
        if let Some(dir) = &self.dir {
            let saved = Saved {
                model: m.model.clone(),
                shard: m.shard.clone(),
                index: m.index,
                combine: m.combine,
                history: history.clone(),
                file: m.file,
            };
            save(dir, &saved)?;
        }
        // Requests take the registry's read side only to clone what they
        // predict with: the swap is held up by no file write.
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        held.insert(
            key,
            Arc::new(Held {
                model: m.model,
                shard: m.shard,
                index: m.index,
                combine: m.combine,
                header,
                trained: m.trained,
                history,
            }),
        );
        Ok(version)
    }

    /// Every resident shard model, by model then shard.
    pub fn list(&self) -> Vec<Arc<Held>> {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The shard models of `model` held now (those of `shards` only, unless
    /// empty): one version each, taken together, so a retraining that lands
    /// meanwhile answers the next request, not half of this one.
    pub fn snapshot(&self, model: &str, shards: &[String]) -> Vec<Arc<Held>> {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|h| h.model == model && (shards.is_empty() || shards.contains(&h.shard)))
            .cloned()
            .collect()
    }

    /// Predict `batch` with each of `held`.
    pub fn predict(
        held: &[Arc<Held>],
        batch: &RecordBatch,
    ) -> Result<Vec<(Arc<Held>, Prediction)>, ResidentError> {
        held.iter()
            .map(|h| {
                let p = h.trained.predict(batch).map_err(|e| {
                    ResidentError::Predict(h.model.clone(), h.shard.clone(), e.to_string())
                })?;
                Ok((h.clone(), p))
            })
            .collect()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(models) = std::fs::read_dir(dir) else {
        return out;
    };
    for m in models.flatten() {
        let Ok(shards) = std::fs::read_dir(m.path()) else {
            continue;
        };
        for s in shards.flatten() {
            let p = s.path();
            if p.extension().is_some_and(|e| e == "resident") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn load(path: &Path) -> Result<Held, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let saved: Saved = postcard::from_bytes(&bytes).map_err(|e| format!("not readable: {e}"))?;
    let (header, trained) = model_file::read(&saved.file).map_err(|e| e.to_string())?;
    let last = saved.history.last().ok_or("no version recorded")?;
    if last.sha != sha12(&saved.file) {
        return Err("its model does not match its last recorded version".into());
    }
    Ok(Held {
        model: saved.model,
        shard: saved.shard,
        index: saved.index,
        combine: saved.combine,
        header,
        trained,
        history: saved.history,
    })
}

/// Write `saved` to `dir/MODEL/SHARD.resident` at once: a temporary file in
/// the same folder, synced, then renamed over the old one.
fn save(dir: &Path, saved: &Saved) -> Result<(), ResidentError> {
    let folder = dir.join(file_part(&saved.model));
    let path = folder.join(format!("{}.resident", file_part(&saved.shard)));
    let err = |e: std::io::Error| ResidentError::Write(path.clone(), e);
    std::fs::create_dir_all(&folder).map_err(err)?;
    let bytes = postcard::to_allocvec(saved)
        .map_err(|e| ResidentError::Write(path.clone(), std::io::Error::other(e)))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&folder).map_err(err)?;
    tmp.write_all(&bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_become_hex() {
        assert_eq!(file_part("A"), "A");
        assert_eq!(file_part("shard_2-b"), "shard_2-b");
        assert_eq!(file_part("../x"), "x2e2e2f78");
        assert_eq!(file_part(""), "x");
    }
}
