//! Fault injection for tests: stop a worker abruptly, as if its process were
//! killed, or silence it, as if its link were cut. The embedded cluster reads
//! it from the environment and hands it to its workers; a worker honours it
//! when it fires.
//!
//! In: the `DAGML_EMBEDDED_FAULT` text. Out: a [`Fault`] that says, per task
//! handed to a worker, whether it fires and what it does.
//! Must not: fire more than once, or be set on a worker outside the embedded
//! cluster (`dagml worker` never reads it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Testing hook: stop one embedded worker abruptly, as if its process were
/// killed, or silence it, as if its link were cut (see [`Fault`]).
pub const FAULT_ENV: &str = "DAGML_EMBEDDED_FAULT";
/// `kill-worker:WHICH:WHEN` or `partition-worker:WHICH:WHEN[:heal-after:SECS]`:
/// WHICH is a worker's index (`embedded-I`) or `any`; WHEN is `after-tasks:N`
/// (when the worker is handed a task after N) or `at-task:PREFIX` (when handed
/// a task whose id starts with PREFIX). It fires once.
///
/// `kill-worker`: the chosen worker's servers stop taking calls, its
/// connections are shut, its heartbeats stop, and the task it was handed never
/// returns. `partition-worker`: the worker goes silent, as behind a cut link:
/// its heartbeats stop and every connection it accepted or accepts stays open
/// with nothing read or written (calls hang, Flight streams stall, pings go
/// unanswered); the task it was handed runs, its answer stuck. With
/// `heal-after:SECS` it speaks again that long after, and registers again.
#[derive(Debug)]
pub struct Fault {
    which: Option<usize>,
    when: When,
    action: Action,
    fired: AtomicBool,
}

/// What a fault does to its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Kill,
    Partition { heal_after: Option<Duration> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum When {
    AfterTasks(u32),
    AtTask(String),
}

impl Fault {
    pub fn parse(s: &str) -> Result<Fault, String> {
        let bad = |why: &str| {
            format!(
                "{FAULT_ENV}=`{s}`: {why} (expected kill-worker|partition-worker:INDEX|any:after-tasks:N|at-task:PREFIX, and for partition-worker optionally :heal-after:SECS)"
            )
        };
        let (rest, heal_after) = match s.rsplit_once(":heal-after:") {
            Some((rest, secs)) => {
                let secs: f64 = secs.parse().map_err(|_| bad("bad heal-after seconds"))?;
                if !(0.0..=3600.0).contains(&secs) {
                    return Err(bad("heal-after must be 0 to 3600 seconds"));
                }
                (rest, Some(Duration::from_secs_f64(secs)))
            }
            None => (s, None),
        };
        let mut parts = rest.splitn(4, ':');
        let action = match parts.next() {
            Some("kill-worker") if heal_after.is_none() => Action::Kill,
            Some("kill-worker") => return Err(bad("a killed worker does not heal")),
            Some("partition-worker") => Action::Partition { heal_after },
            _ => return Err(bad("only kill-worker and partition-worker are known")),
        };
        let which = match parts.next() {
            Some("any") => None,
            Some(i) => Some(i.parse().map_err(|_| bad("bad worker index"))?),
            None => return Err(bad("no worker")),
        };
        let when = match (parts.next(), parts.next()) {
            (Some("after-tasks"), Some(n)) => {
                When::AfterTasks(n.parse().map_err(|_| bad("bad task count"))?)
            }
            (Some("at-task"), Some(p)) if !p.is_empty() => When::AtTask(p.to_string()),
            _ => return Err(bad("no after-tasks:N or at-task:PREFIX")),
        };
        Ok(Fault {
            which,
            when,
            action,
            fired: AtomicBool::new(false),
        })
    }

    /// From `DAGML_EMBEDDED_FAULT` (unset or empty: none).
    pub fn from_env() -> Result<Option<Arc<Fault>>, String> {
        match std::env::var(FAULT_ENV) {
            Ok(s) if !s.is_empty() => Fault::parse(&s).map(|f| Some(Arc::new(f))),
            _ => Ok(None),
        }
    }

    /// Whether worker `index`, handed its `handed`-th task (from 1) `task`,
    /// dies now. True at most once.
    pub fn fires(&self, index: usize, handed: u32, task: &str) -> bool {
        if self.which.is_some_and(|w| w != index) {
            return false;
        }
        let due = match &self.when {
            When::AfterTasks(n) => handed > *n,
            When::AtTask(prefix) => task.starts_with(prefix.as_str()),
        };
        due && !self.fired.swap(true, Ordering::SeqCst)
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// Whether it can ever fire on worker `index`.
    pub fn targets(&self, index: usize) -> bool {
        self.which.is_none_or(|w| w == index)
    }
}

#[cfg(test)]
mod tests {
    use super::{Action, Fault};
    use std::time::Duration;

    #[test]
    fn a_fault_fires_once_on_the_worker_and_task_it_names() {
        let f = Fault::parse("kill-worker:1:after-tasks:2").unwrap();
        assert!(!f.fires(0, 5, "x"));
        assert!(!f.fires(1, 2, "x"));
        assert!(f.fires(1, 3, "x"));
        assert!(!f.fires(1, 4, "x"));
        assert!(f.targets(1) && !f.targets(0));

        let f = Fault::parse("kill-worker:any:at-task:fit:forest/").unwrap();
        assert!(f.targets(0) && f.targets(7));
        assert!(!f.fires(2, 1, "source:blobs/0"));
        assert!(f.fires(2, 2, "fit:forest/3"));
        assert!(!f.fires(0, 1, "fit:forest/4"));
        assert_eq!(f.action(), Action::Kill);

        let f = Fault::parse("partition-worker:1:at-task:fit:forest/:heal-after:2.5").unwrap();
        assert_eq!(
            f.action(),
            Action::Partition {
                heal_after: Some(Duration::from_millis(2500))
            }
        );
        assert!(f.fires(1, 1, "fit:forest/0"));
        let f = Fault::parse("partition-worker:any:after-tasks:3").unwrap();
        assert_eq!(f.action(), Action::Partition { heal_after: None });
        assert!(!f.fires(0, 3, "x") && f.fires(0, 4, "x"));

        for bad in [
            "",
            "kill-worker",
            "kill-worker:x:after-tasks:1",
            "kill-worker:0:after-tasks:many",
            "kill-worker:0:at-task:",
            "pause-worker:0:after-tasks:1",
            "kill-worker:0:after-tasks:1:heal-after:2",
            "partition-worker:0:after-tasks:1:heal-after:soon",
            "partition-worker:0:heal-after:2",
        ] {
            assert!(Fault::parse(bad).is_err(), "{bad}");
        }
    }
}
