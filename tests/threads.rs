//! `--threads N` bounds every thread a run uses: the `dagml run --in-process`
//! process never has more than N threads computing (plus its main thread,
//! which only drives the run graph). Watched from outside, in /proc, while a
//! forest fits in parallel (rayon would add a pool of one thread per core if
//! any parallel loop escaped the run's pool).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PIPELINE: &str = r#"
[pipeline]
name = "threads"
seed = 5

[sources.rows]
kind = "synthetic"
generator = "classification"
rows = 4000
features = 12
classes = 3
partitions = 4

[splits.holdout]
kind = "holdout"
input = "rows"
test_fraction = 0.25

[models.forest]
estimator = "random_forest"
input = "holdout.train"
target = "y"
params = { n_trees = 40 }

[evaluations.test]
model = "forest"
data = ["holdout.test"]
metrics = ["accuracy"]
"#;

/// The most threads the process had at any sample, and whether it succeeded.
fn max_threads(dir: &Path, threads: usize) -> (usize, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(["run", "threads.toml", "--in-process", "--quiet"])
        .args(["--threads", &threads.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dagml");
    let tasks = format!("/proc/{}/task", child.id());
    let mut most = 0;
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir(&tasks) {
            most = most.max(entries.count());
        }
        match child.try_wait() {
            Ok(Some(status)) => return (most, status.success()),
            Ok(None) if start.elapsed() > Duration::from_secs(120) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dagml run did not finish in 120 s");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("wait: {e}"),
        }
    }
}

#[test]
fn threads_bounds_every_thread_of_an_in_process_run() {
    if !Path::new("/proc/self/task").exists() {
        eprintln!("skipped: no /proc/PID/task on this system");
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("threads.toml"), PIPELINE).expect("write pipeline");
    for threads in [1, 2] {
        let (most, ok) = max_threads(d.path(), threads);
        assert!(ok, "the run with --threads {threads} failed");
        assert!(most >= 1, "no sample of the process was taken");
        assert!(
            most <= threads + 1,
            "--threads {threads}: the process had {most} threads (the main thread and {threads} are allowed)"
        );
    }
}
