//! `/metrics`: the observation in the Prometheus text format (version 0.0.4).
//!
//! In: a [`Snapshot`]. Out: text: counters since the scheduler started (runs,
//! tasks started/finished/failed, retries, lost workers, bytes moved between
//! workers), the task-duration histogram, tasks of the kept runs by state, and
//! per-worker gauges from the heartbeats (memory, limit, thresholds, spilled
//! bytes, partitions, threads); per served shard model and worker, the
//! `ServeInfer` calls it answered, those that failed, its latency histogram
//! and its version.
//! Must not: invent a value nobody measured (a worker that has not sent a
//! heartbeat yet reports zeros it says are zeros: `dagml_worker_up`).

use crate::cluster::observe::{DURATION_BUCKETS, Snapshot, TaskState};
use crate::cluster::serving_stats::LATENCY_BUCKETS;
use std::fmt::Write;

/// A label value, escaped as the format wants (`\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn render(s: &Snapshot) -> String {
    let c = &s.counters;
    let mut out = String::new();
    let counters: [(&str, &str, u64); 10] = [
        (
            "dagml_runs_started_total",
            "Runs submitted and planned.",
            c.runs_started,
        ),
        ("dagml_runs_done_total", "Runs that finished.", c.runs_done),
        (
            "dagml_runs_failed_total",
            "Runs that failed.",
            c.runs_failed,
        ),
        (
            "dagml_tasks_started_total",
            "Task attempts started on a worker.",
            c.tasks_started,
        ),
        (
            "dagml_tasks_finished_total",
            "Tasks finished (their outputs held).",
            c.tasks_done,
        ),
        (
            "dagml_task_failures_total",
            "Task attempts that failed, retried or not.",
            c.task_failures,
        ),
        (
            "dagml_task_retries_total",
            "Task attempts that failed and run again.",
            c.retries,
        ),
        (
            "dagml_tasks_recomputed_total",
            "Done tasks run again: their outputs were lost with a worker.",
            c.recomputed,
        ),
        (
            "dagml_workers_lost_total",
            "Workers declared lost (killed, silent, drained).",
            c.workers_lost,
        ),
        (
            "dagml_bytes_moved_total",
            "Input bytes tasks fetched from another worker.",
            c.bytes_moved,
        ),
    ];
    for (name, help, v) in counters {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }

    let name = "dagml_task_duration_seconds";
    head(
        &mut out,
        name,
        "histogram",
        "Task durations as the workers measured them.",
    );
    let mut cumulative = 0;
    for (i, ub) in DURATION_BUCKETS.iter().enumerate() {
        cumulative += c.duration_buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{ub}\"}} {cumulative}");
    }
    let count: u64 = c.duration_buckets.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", c.duration_sum);
    let _ = writeln!(out, "{name}_count {count}");

    let name = "dagml_run_tasks";
    head(&mut out, name, "gauge", "Tasks of each kept run, by state.");
    for r in &s.runs {
        for st in TaskState::ALL {
            let n = r.tasks.iter().filter(|t| t.state == st).count();
            let _ = writeln!(
                out,
                "{name}{{run=\"{}\",state=\"{}\"}} {n}",
                label(&r.id),
                st.as_str()
            );
        }
    }

    let alive = s.workers.iter().filter(|w| w.alive).count();
    head(
        &mut out,
        "dagml_workers",
        "gauge",
        "Workers known, alive or lost.",
    );
    let _ = writeln!(out, "dagml_workers{{state=\"alive\"}} {alive}");
    let _ = writeln!(
        out,
        "dagml_workers{{state=\"lost\"}} {}",
        s.workers.len() - alive
    );

    type Get = fn(&crate::cluster::observe::WorkerStats) -> u64;
    let gauges: [(&str, &str, &str, Get); 8] = [
        (
            "dagml_worker_memory_used_bytes",
            "gauge",
            "Bytes of partitions in memory.",
            |w| w.memory_used,
        ),
        (
            "dagml_worker_memory_limit_bytes",
            "gauge",
            "The worker's --memory-limit (0: none).",
            |w| w.memory_limit,
        ),
        (
            "dagml_worker_spill_threshold_bytes",
            "gauge",
            "Bytes in memory past which it spills (0: never).",
            |w| w.spill_threshold,
        ),
        (
            "dagml_worker_pause_threshold_bytes",
            "gauge",
            "Bytes in memory past which it takes no task (0: never).",
            |w| w.pause_threshold,
        ),
        (
            "dagml_worker_spilled_bytes_total",
            "counter",
            "Bytes written to spill files.",
            |w| w.spilled_bytes,
        ),
        (
            "dagml_worker_partitions",
            "gauge",
            "Partitions held, in memory or spilled.",
            |w| w.partitions as u64,
        ),
        (
            "dagml_worker_busy_threads",
            "gauge",
            "Threads running a task.",
            |w| w.busy_threads as u64,
        ),
        (
            "dagml_worker_threads",
            "gauge",
            "Threads the worker runs tasks on.",
            |w| w.threads as u64,
        ),
    ];
    for (name, kind, help, get) in gauges {
        head(&mut out, name, kind, help);
        for w in s.workers.iter().filter(|w| w.alive) {
            let _ = writeln!(
                out,
                "{name}{{worker=\"{}\",address=\"{}\"}} {}",
                label(&w.name),
                label(&w.address),
                get(&w.stats)
            );
        }
    }
    let spilled: u64 = s.workers.iter().map(|w| w.stats.spilled_bytes).sum();
    head(
        &mut out,
        "dagml_spilled_bytes_total",
        "counter",
        "Bytes spilled by the known workers, in all.",
    );
    let _ = writeln!(out, "dagml_spilled_bytes_total {spilled}");
    serving(&mut out, s);
    out
}

/// Per served shard model on each live worker.
fn serving(out: &mut String, s: &Snapshot) {
    let held: Vec<(String, &crate::cluster::observe::ShardHolderView)> = s
        .serving
        .iter()
        .flat_map(|m| {
            m.shards.iter().filter(|h| h.alive).map(move |h| {
                let labels = format!(
                    "model=\"{}\",shard=\"{}\",worker=\"{}\"",
                    label(&m.model),
                    label(&h.shard),
                    label(&h.worker)
                );
                (labels, h)
            })
        })
        .collect();
    type Get = fn(&crate::cluster::observe::ShardHolderView) -> f64;
    let simple: [(&str, &str, &str, Get); 4] = [
        (
            "dagml_serving_requests_total",
            "counter",
            "ServeInfer calls a shard model answered on a worker (since it started).",
            |h| h.requests as f64,
        ),
        (
            "dagml_serving_errors_total",
            "counter",
            "ServeInfer calls for a shard model that failed on a worker.",
            |h| h.errors as f64,
        ),
        (
            "dagml_serving_version",
            "gauge",
            "The version of the shard model a worker holds.",
            |h| h.version as f64,
        ),
        (
            "dagml_serving_requests_per_second",
            "gauge",
            "Calls answered per second over the last heartbeats.",
            |h| h.requests_per_s,
        ),
    ];
    for (name, kind, help, get) in simple {
        head(out, name, kind, help);
        for (l, h) in &held {
            let _ = writeln!(out, "{name}{{{l}}} {}", get(h));
        }
    }
    let name = "dagml_serving_latency_seconds";
    head(
        out,
        name,
        "histogram",
        "A worker's time to answer a ServeInfer call, per shard model it answered.",
    );
    for (l, h) in &held {
        let mut cumulative = 0;
        for (i, ub) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += h.latency_buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{ub}\"}} {cumulative}");
        }
        let count: u64 = h.latency_buckets.iter().sum();
        let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.latency_sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{l}}} {count}");
    }
}
