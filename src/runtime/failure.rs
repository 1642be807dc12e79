//! Structured failures: what went wrong in a task, whether trying again can help,
//! and the one error a failed run ends with, whichever way it ran.
//!
//! In: a kernel's error ([`TaskError`]: a [`FailureKind`] and a message), or a
//! cluster event (a worker lost, a peer that stopped answering). Out: the
//! [`RunError`] the user reads: the task, the worker, the attempts, the cause
//! and what to do. It is the same type in-process, on the embedded cluster and on
//! remote workers (it crosses the wire field by field, see proto/).
//! Must not: decide retries by parsing messages: the kind decides.

use serde::{Deserialize, Serialize};

/// Why a task failed. The kind, not the message, decides whether it is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The data is wrong for this step (a malformed row, a missing column, a
    /// target with one class). Deterministic: the same input fails again.
    BadData,
    /// A file could not be read or written. Deterministic as far as dagml can
    /// tell (a missing file stays missing).
    Io,
    /// A partition arrived or was read back damaged (a spill file, a transfer):
    /// computing it again can help.
    CorruptPartition,
    /// An input could not be fetched from the worker holding it: that worker
    /// is lost, and its partitions are computed again.
    LostPeer,
    /// The worker running the task was lost (killed, cut off, silent).
    WorkerLost,
    /// The run was cancelled (Ctrl-C, the client went away).
    Cancelled,
    /// A worker planned the pipeline differently from the scheduler (another
    /// dagml version, other files): it refuses rather than compute something else.
    PlanMismatch,
    /// A bug in dagml (a task returned the wrong number of outputs, a panic).
    Internal,
}

impl FailureKind {
    /// Whether running the task again (elsewhere) can give another outcome.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureKind::CorruptPartition | FailureKind::LostPeer | FailureKind::WorkerLost
        )
    }

    /// Stable names, for the wire and for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::BadData => "bad-data",
            FailureKind::Io => "io",
            FailureKind::CorruptPartition => "corrupt-partition",
            FailureKind::LostPeer => "lost-peer",
            FailureKind::WorkerLost => "worker-lost",
            FailureKind::Cancelled => "cancelled",
            FailureKind::PlanMismatch => "plan-mismatch",
            FailureKind::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<FailureKind> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == s)
    }

    /// What the user can do about it.
    pub fn hint(self) -> &'static str {
        match self {
            FailureKind::BadData => {
                "fix the data or the step's settings; `dagml check --data` checks files before a run"
            }
            FailureKind::Io => {
                "check that the file exists and can be read (or written) from every worker"
            }
            FailureKind::CorruptPartition => {
                "a partition was damaged in transfer or on disk; check the workers' disks (spill folder)"
            }
            FailureKind::LostPeer | FailureKind::WorkerLost => {
                "check the workers' network and logs; start more workers or raise max_attempts"
            }
            FailureKind::Cancelled => "the run was cancelled; run it again",
            FailureKind::PlanMismatch => {
                "run the same dagml version everywhere, with the same files visible to every process"
            }
            FailureKind::Internal => {
                "this is a bug in dagml; please report it with the pipeline file"
            }
        }
    }
}

pub const ALL_KINDS: [FailureKind; 8] = [
    FailureKind::BadData,
    FailureKind::Io,
    FailureKind::CorruptPartition,
    FailureKind::LostPeer,
    FailureKind::WorkerLost,
    FailureKind::Cancelled,
    FailureKind::PlanMismatch,
    FailureKind::Internal,
];

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::BadData => "bad data",
            FailureKind::Io => "I/O error",
            FailureKind::CorruptPartition => "corrupt partition",
            FailureKind::LostPeer => "lost peer",
            FailureKind::WorkerLost => "worker lost",
            FailureKind::Cancelled => "cancelled",
            FailureKind::PlanMismatch => "plan mismatch",
            FailureKind::Internal => "internal error",
        })
    }
}

/// A kernel's error: the kind and what happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    pub kind: FailureKind,
    pub message: String,
}

impl TaskError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            message: message.into(),
        }
    }
    pub fn bad_data(message: impl Into<String>) -> Self {
        TaskError::new(FailureKind::BadData, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        TaskError::new(FailureKind::Internal, message)
    }
}

/// The kernels' own messages are about the data (a target with one class, a
/// cast that does not fit): bad data, unless a kernel says otherwise.
impl From<String> for TaskError {
    fn from(message: String) -> Self {
        TaskError::bad_data(message)
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        TaskError::bad_data(message)
    }
}

impl From<crate::data::DataError> for TaskError {
    fn from(e: crate::data::DataError) -> Self {
        use crate::data::DataError as D;
        let kind = match &e {
            D::Io { .. } | D::Write { .. } | D::NoFiles(_) => FailureKind::Io,
            _ => FailureKind::BadData,
        };
        TaskError::new(kind, e.to_string())
    }
}

/// Why a run failed: the task, where it last ran, how often, and the cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct RunError {
    /// The task that failed, or empty for a run-level failure (no worker left,
    /// a pipeline that does not plan, a cancel).
    pub task: String,
    /// The worker it last ran on (none in-process).
    pub worker: Option<String>,
    /// Attempts made, and the bound.
    pub attempts: u32,
    pub max_attempts: u32,
    pub kind: FailureKind,
    pub cause: String,
}

impl RunError {
    /// A failure of the run as a whole, not of one task.
    pub fn of_run(kind: FailureKind, cause: impl Into<String>) -> Self {
        RunError {
            task: String::new(),
            worker: None,
            attempts: 0,
            max_attempts: 0,
            kind,
            cause: cause.into(),
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.task.is_empty() {
            write!(f, "{}", self.cause)?;
        } else {
            write!(f, "task `{}` failed", self.task)?;
            if let Some(w) = &self.worker {
                write!(f, " on worker `{w}`")?;
            }
            write!(f, " (attempt {} of {}", self.attempts, self.max_attempts)?;
            if !self.kind.retryable() && self.attempts < self.max_attempts {
                write!(f, "; {} is not retried", self.kind)?;
            }
            write!(f, "): {}: {}", self.kind, self.cause)?;
        }
        write!(f, "\n  hint: {}", self.kind.hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_wire_names() {
        for k in ALL_KINDS {
            assert_eq!(FailureKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(FailureKind::parse("nonsense"), None);
    }

    #[test]
    fn a_missing_file_is_an_io_error_and_a_bad_row_bad_data() {
        let missing = crate::data::DataError::io(
            "data/x.csv",
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        );
        assert_eq!(TaskError::from(missing).kind, FailureKind::Io);
        let bad = crate::data::DataError::Csv {
            path: "data/x.csv".into(),
            reason: "line 4: expected 3 fields".into(),
        };
        assert_eq!(TaskError::from(bad).kind, FailureKind::BadData);
    }

    #[test]
    fn only_failures_of_the_machine_are_retried() {
        let retried: Vec<_> = ALL_KINDS.into_iter().filter(|k| k.retryable()).collect();
        assert_eq!(
            retried,
            vec![
                FailureKind::CorruptPartition,
                FailureKind::LostPeer,
                FailureKind::WorkerLost
            ]
        );
    }

    #[test]
    fn the_message_names_task_worker_attempts_cause_and_hint() {
        let f = RunError {
            task: "source:rows/p0".into(),
            worker: Some("w1".into()),
            attempts: 1,
            max_attempts: 3,
            kind: FailureKind::BadData,
            cause: "line 7: expected 4 fields, found 3".into(),
        };
        assert_eq!(
            f.to_string(),
            "task `source:rows/p0` failed on worker `w1` (attempt 1 of 3; bad data is not retried): \
             bad data: line 7: expected 4 fields, found 3\n  hint: fix the data or the step's settings; \
             `dagml check --data` checks files before a run"
        );
    }
}
