//! What a run does to its output files when it fails, is interrupted, or
//! cannot write (issue 12, items 9-11), through the binary: a failed run leaves
//! every old output as it was and says so; no temporary file is left behind;
//! a link planted at an output path is replaced, not written through; an
//! output folder that cannot be written is found before any compute; the same
//! holds on the embedded cluster, whose workers stage the files.

mod common;

use common::{dagml_in as dagml, text};
use std::path::Path;
use std::process::Command;

/// Two CSV sources, each with its model; every output kind but the picture.
/// `second.csv` can be broken to make the run fail late.
const PIPELINE: &str = r#"
[pipeline]
name = "outs"
seed = 5

[sources.first]
kind = "csv"
path = "first.csv"

[sources.second]
kind = "csv"
path = "second.csv"

[models.one]
estimator = "decision_tree"
input = "first"
target = "y"

[models.two]
estimator = "decision_tree"
input = "second"
target = "y"

[evaluations.scores]
model = "one"
data = ["first"]
metrics = ["accuracy"]

[evaluations.scores_two]
model = "two"
data = ["second"]
metrics = ["accuracy"]

[outputs.model_file]
kind = "model"
model = "one"
path = "out/one.model"

[outputs.metrics]
kind = "metrics"
path = "out/metrics.json"

[outputs.predictions]
kind = "predictions"
model = "one"
data = "first"
path = "out/predictions.csv"

[outputs.rows]
kind = "dataset"
data = "first"
format = "csv"
path = "out/rows"
"#;

fn rows(n: usize) -> String {
    let mut s = String::from("a,b,y\n");
    for i in 0..n {
        s.push_str(&format!(
            "{},{},{}\n",
            i % 7,
            (i * 3) % 5,
            if i % 7 > 3 { "p" } else { "q" }
        ));
    }
    s
}

fn setup(dir: &Path) {
    std::fs::write(dir.join("p.toml"), PIPELINE).expect("write");
    std::fs::write(dir.join("first.csv"), rows(60)).expect("write");
    std::fs::write(dir.join("second.csv"), rows(40)).expect("write");
}

/// Every file under `dir/out`, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("out")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                out.push((name, std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn no_temporaries(snap: &[(String, Vec<u8>)]) -> bool {
    snap.iter()
        .all(|(n, _)| !n.contains(".dagml-") && !n.contains(".tmp"))
}

fn a_failed_run_leaves_every_old_output_as_it_was(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    let mut args = vec!["run", "p.toml", "-q"];
    args.extend_from_slice(extra);
    let o = dagml(&args, dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = snapshot(dir.path());
    assert!(
        before.len() >= 4,
        "{:?}",
        before.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    // New data for the first model (its outputs would change), and a second
    // source that fails: nothing of the new run may land.
    std::fs::write(dir.path().join("first.csv"), rows(90)).expect("write");
    std::fs::write(dir.path().join("second.csv"), "a,b,y\n1,2,p\n3,4,5,q\n").expect("write");
    let o = dagml(&args, dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let after = snapshot(dir.path());
    assert_eq!(
        after.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        before.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "{}",
        text(&o)
    );
    assert!(after == before, "an old output changed\n{}", text(&o));
    assert!(
        no_temporaries(&after),
        "{:?}",
        after.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("left as they were") && err.contains("`out/one.model`"),
        "{}",
        text(&o)
    );
    // Fixed, it runs and every output is new.
    std::fs::write(dir.path().join("second.csv"), rows(40)).expect("write");
    let o = dagml(&args, dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let fixed = snapshot(dir.path());
    assert!(
        no_temporaries(&fixed),
        "{:?}",
        fixed.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let predictions = |s: &[(String, Vec<u8>)]| {
        s.iter()
            .find(|(n, _)| n.ends_with("predictions.csv"))
            .map(|(_, b)| b.clone())
    };
    assert_ne!(predictions(&fixed), predictions(&before));
}

#[test]
fn a_failed_run_leaves_every_old_output_as_it_was_in_process() {
    a_failed_run_leaves_every_old_output_as_it_was(&["--in-process", "--threads", "1"]);
}

#[test]
fn a_failed_run_leaves_every_old_output_as_it_was_on_the_embedded_cluster() {
    a_failed_run_leaves_every_old_output_as_it_was(&["--workers", "2"]);
}

#[test]
fn an_output_folder_that_cannot_be_written_is_refused_before_any_compute() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    // A file where the output folder should be.
    std::fs::write(dir.path().join("out"), b"not a folder").expect("write");
    let o = dagml(&["run", "p.toml", "-q", "--in-process"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot write `out/") && err.contains("nothing was computed"),
        "{}",
        text(&o)
    );
    assert!(
        !err.contains(".tmp") && !err.contains("cannot read"),
        "{}",
        text(&o)
    );
}

#[cfg(unix)]
#[test]
fn a_link_planted_at_an_output_path_is_replaced_not_written_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"precious").expect("write");
    std::os::unix::fs::symlink(&victim, dir.path().join("out/metrics.json")).expect("symlink");
    let o = dagml(&["run", "p.toml", "-q", "--in-process"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    let m = std::fs::symlink_metadata(dir.path().join("out/metrics.json")).expect("metrics");
    assert!(m.file_type().is_file(), "a new file, not the link");
}

#[cfg(unix)]
#[test]
fn sigterm_during_a_run_leaves_no_temporary_file_and_the_old_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    let o = dagml(&["run", "p.toml", "-q", "--in-process"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = snapshot(dir.path());
    // A source slow to fit (a forest on many generated rows), written last.
    let slow = PIPELINE.to_string()
        + r#"
[sources.many]
kind = "synthetic"
generator = "classification"
rows = 400000
features = 20
informative = 5
classes = 3

[models.slow]
estimator = "random_forest"
input = "many"
target = "y"
params = { n_trees = 40 }

[evaluations.slow_scores]
model = "slow"
data = ["many"]
metrics = ["accuracy"]
"#;
    std::fs::write(dir.path().join("p.toml"), slow).expect("write");
    std::fs::write(dir.path().join("first.csv"), rows(90)).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(["run", "p.toml", "-q", "--in-process", "--threads", "1"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Until the small outputs are staged (or a generous bound).
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(20) {
        let staged = std::fs::read_dir(dir.path().join("out"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().contains(".dagml-"))
            })
            .unwrap_or(false);
        if staged {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let still_running = child.try_wait().expect("wait").is_none();
    assert!(
        still_running,
        "the run ended before it could be interrupted"
    );
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    let after = snapshot(dir.path());
    let names: Vec<&String> = after.iter().map(|(n, _)| n).collect();
    assert!(no_temporaries(&after), "{names:?}");
    assert!(after == before, "an old output changed: {names:?}");
}

#[test]
fn an_output_larger_than_its_disk_is_warned_at_check_and_plan_and_refused_at_run() {
    // 10^12 generated rows written as a dataset: ~72 TB, more than any disk
    // this runs on has free.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("big.toml"),
        r#"
[pipeline]
name = "big"
seed = 1

[sources.rows]
kind = "synthetic"
generator = "classification"
rows = 1_000_000_000_000
features = 8
partitions = 4

[outputs.copy]
kind = "dataset"
data = "rows"
path = "out/copy"
"#,
    )
    .expect("write");
    let check = dagml(&["check", "big.toml"], dir.path());
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(0), "a warning: {}", text(&check));
    assert!(
        said.starts_with("big.toml: warning[disk]: output `out/copy` is estimated at ~"),
        "{said}"
    );
    assert!(said.contains("free: `run` will refuse to start"), "{said}");
    let denied = dagml(&["check", "big.toml", "--deny-warnings"], dir.path());
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied));
    let plan = dagml(&["plan", "big.toml"], dir.path());
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stderr).contains("warning[disk]: output `out/copy`"),
        "{}",
        text(&plan)
    );
    let run = dagml(&["run", "big.toml", "-q", "--in-process"], dir.path());
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(err.contains("output `out/copy` is estimated at ~"), "{err}");
    assert!(
        err.contains("and the disk that holds `out/copy` has") && err.contains("nothing was run"),
        "{err}"
    );
    assert!(!dir.path().join("out/copy").exists(), "nothing was written");
}

#[test]
fn data_beyond_a_declared_clusters_memory_that_its_disk_cannot_hold_is_warned_at_check() {
    // ~72 TB against 2 × 1 GB of memory: the rest would spill to the embedded
    // workers' data root (the system temp dir), whose disk has far less free.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("spill.toml"),
        r#"
[pipeline]
name = "spill"

[cluster]
kind = "local"
workers = 2
memory_limit = "1GB"

[sources.rows]
kind = "synthetic"
generator = "classification"
rows = 1_000_000_000_000
features = 8
partitions = 100000

[models.m]
estimator = "logistic_regression"
input = "rows"
target = "y"

[evaluations.e]
model = "m"
data = ["rows"]
metrics = ["accuracy"]
"#,
    )
    .expect("write");
    let check = dagml(&["check", "spill.toml"], dir.path());
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(
        check.status.code(),
        Some(0),
        "warnings only: {}",
        text(&check)
    );
    assert!(said.contains("warning[W0302]"), "{said}");
    let disk = said
        .lines()
        .find(|l| l.starts_with("spill.toml: warning[disk]: source `rows` is estimated at ~"))
        .unwrap_or_else(|| panic!("no disk warning: {said}"));
    assert!(
        disk.contains("would spill to its workers' data root") && disk.contains("free;"),
        "{disk}"
    );
}
