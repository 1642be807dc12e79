//! Progress of a run: a bar on a terminal, plain lines in a log, and the summary
//! at the end (time per step, tasks, peak memory).
//!
//! In: task start/finish events from the executor. Out: text on stderr.
//! Must not: slow the run down (one short lock per event) or print to stdout,
//! which belongs to results.

use super::executor::{Observer, TaskRecord};
use crate::plan::{PhysicalPlan, Task};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
    /// Tasks left per logical node, to print a line when a step completes.
    left: Mutex<BTreeMap<String, usize>>,
    /// Per forest node: (trees fitted, trees in all).
    trees: Mutex<BTreeMap<String, (u32, u32)>>,
    quiet: bool,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise; nothing when `quiet`.
    pub fn new(plan: &PhysicalPlan, quiet: bool) -> Self {
        let mut left = BTreeMap::new();
        let mut trees = BTreeMap::new();
        for t in &plan.tasks {
            *left.entry(t.node.clone()).or_insert(0) += 1;
            if let crate::plan::TaskKind::FitTrees { count, .. } = t.kind {
                trees.entry(t.node.clone()).or_insert((0, 0)).1 += count;
            }
        }
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(
                Some(plan.tasks.len() as u64),
                ProgressDrawTarget::stderr(),
            );
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress {
            bar,
            start: Instant::now(),
            left: Mutex::new(left),
            trees: Mutex::new(trees),
            quiet,
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn line(&self, msg: String) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }
}

impl Observer for Progress {
    fn started(&self, task: &Task) {
        if let Some(b) = &self.bar {
            b.set_message(task.id.to_string());
        }
    }

    fn finished(&self, task: &Task, _elapsed: Duration) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        if let crate::plan::TaskKind::FitTrees { count, .. } = task.kind {
            let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((done, all)) = trees.get_mut(&task.node) {
                *done = (*done + count).min(*all);
                let t = self.start.elapsed().as_secs_f64();
                let msg = format!("[{t:7.1}s] {}: {done}/{all} trees", task.node);
                match &self.bar {
                    Some(b) => b.set_message(msg),
                    None if *done < *all => self.line(msg),
                    None => {}
                }
            }
        }
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        // On a cluster a task whose outputs were lost with a worker finishes
        // twice: count each step's end once.
        if let Some(n) = left.get_mut(&task.node)
            && *n > 0
        {
            *n -= 1;
            if *n == 0 {
                let t = self.start.elapsed().as_secs_f64();
                self.line(format!("[{t:7.1}s] done {}", task.node));
            }
        }
    }
}

/// Peak resident memory of this process (Linux VmHWM), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Time per logical step: (node id, tasks, summed task time), in plan order.
pub fn per_step(records: &[TaskRecord]) -> Vec<StepTime> {
    let mut m: BTreeMap<&str, StepTime> = BTreeMap::new();
    for r in records {
        let e = m.entry(r.node.as_str()).or_insert_with(|| StepTime {
            step: r.node.clone(),
            tasks: 0,
            busy: Duration::ZERO,
            first_start: r.start,
            last_end: r.start + r.elapsed,
        });
        e.tasks += 1;
        e.busy += r.elapsed;
        e.first_start = e.first_start.min(r.start);
        e.last_end = e.last_end.max(r.start + r.elapsed);
    }
    m.into_values().collect()
}

/// One step's tasks: how many, their summed time, and the wall time from the
/// first start to the last end.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StepTime {
    pub step: String,
    pub tasks: usize,
    pub busy: Duration,
    pub first_start: Duration,
    pub last_end: Duration,
}

impl StepTime {
    pub fn wall(&self) -> Duration {
        self.last_end.saturating_sub(self.first_start)
    }
}
