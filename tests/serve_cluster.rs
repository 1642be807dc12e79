//! `dagml serve PIPELINE`: shard models trained on a cluster stay resident on
//! their workers and answer together; retraining a shard while serving; a
//! lost worker.
//!
//! A small per-shard forest on House Prices (three shards by rows) is served
//! on the embedded cluster and on worker processes; every combined answer
//! with all shards up must equal `dagml predict` on the ensemble's model file
//! bit for bit. Processes are owned by a guard that kills them; waits are
//! bounded; the load is a bounded number of requests to loopback.

mod common;

use arrow::record_batch::RecordBatch;
use common::Procs;
use common::http::read_arrow;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TRAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/house_prices/train.csv");
const TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/house_prices/test.csv");

const PIPELINE: &str = include_str!("fixtures/served_shards.toml");

/// A folder with the pipeline and its training data (inside the workers'
/// data root, which is this folder).
fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("pipeline.toml"), PIPELINE).expect("write");
    std::fs::copy(TRAIN, d.path().join("train.csv")).expect("copy train.csv");
    d
}

fn dagml_in(dir: &Path) -> Command {
    let mut c = common::dagml(None);
    c.current_dir(dir);
    c
}

/// `dagml predict` of the ensemble's model file on test.csv (inputs and
/// prediction), from the model file in `dir`.
fn predicted(dir: &Path) -> RecordBatch {
    let dest = dir.join("predicted.arrow");
    let out = dagml_in(dir)
        .args(["predict", "out/ensemble.model", TEST, "-o"])
        .arg(&dest)
        .output()
        .expect("dagml predict");
    assert!(out.status.success(), "{}", common::text(&out));
    read_arrow(&std::fs::read(dest).expect("read"))
}

fn http(addr: &str, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (status, _, body) =
        common::http::http(addr, method, path, &[("Content-Type", ctype)], body);
    (status, body)
}

/// The Arrow body of the model's inputs, from predict's output rows.
fn body_of(addr: &str, want: &RecordBatch) -> Vec<u8> {
    let (s, b) = http(addr, "GET", "/v2/models/ensemble", "application/json", b"");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let meta: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
    let idx: Vec<usize> = meta["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| {
            want.schema()
                .index_of(i["name"].as_str().expect("name"))
                .expect("feature in test.csv")
        })
        .collect();
    let input = want.project(&idx).expect("project");
    let mut body = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut body, &input.schema()).expect("w");
    w.write(&input).expect("write");
    w.finish().expect("finish");
    drop(w);
    body
}

/// An answer: its status, prediction column (when 200), and parameters.
struct Got {
    status: u16,
    batch: Option<RecordBatch>,
    parameters: serde_json::Value,
    text: String,
}

fn infer(addr: &str, body: &[u8]) -> Got {
    let (status, b) = http(
        addr,
        "POST",
        "/v2/models/ensemble/infer",
        "application/vnd.apache.arrow.stream",
        body,
    );
    if status != 200 {
        return Got {
            status,
            batch: None,
            parameters: serde_json::Value::Null,
            text: String::from_utf8_lossy(&b).into_owned(),
        };
    }
    let batch = read_arrow(&b);
    let parameters = batch
        .schema()
        .metadata()
        .get("parameters")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(serde_json::Value::Null);
    Got {
        status,
        batch: Some(batch),
        parameters,
        text: String::new(),
    }
}

fn assert_equals_predict(got: &Got, want: &RecordBatch, what: &str) {
    assert_eq!(got.status, 200, "{what}: {}", got.text);
    let values = |b: &RecordBatch| -> Vec<u64> {
        b.column_by_name("prediction")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Float64Array>())
            .expect("a Float64 prediction")
            .values()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    let (g, w) = (values(got.batch.as_ref().expect("a batch")), values(want));
    let differ = g.iter().zip(&w).filter(|(a, b)| a != b).count();
    assert!(
        g.len() == w.len() && differ == 0,
        "{what}: the served ensemble differs from dagml predict in {differ} of {} rows ({})",
        w.len(),
        got.parameters
    );
    assert_eq!(
        got.parameters["degraded"], false,
        "{what}: {}",
        got.parameters
    );
}

/// The version and worker of every shard that answered.
fn shards(got: &Got) -> Vec<(String, u64, String)> {
    got.parameters["shards"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(s, v)| {
                    (
                        s.clone(),
                        v["version"].as_u64().unwrap_or(0),
                        v["worker"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A free loopback port (bound and let go: the worker binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn on_the_embedded_cluster_the_served_shards_answer_what_the_model_file_predicts() {
    let d = workdir();
    let mut procs = Procs::default();
    let mut cmd = dagml_in(d.path());
    cmd.args(["serve", "pipeline.toml", "--listen", "127.0.0.1:0"]);
    let addr = procs.serve_command("serve", cmd, None);
    let want = predicted(d.path());
    let body = body_of(&addr, &want);
    let got = infer(&addr, &body);
    assert_equals_predict(&got, &want, "embedded");
    let s = shards(&got);
    assert_eq!(
        s.iter()
            .map(|(n, v, _)| (n.as_str(), *v))
            .collect::<Vec<_>>(),
        [("A", 1), ("B", 1), ("C", 1)]
    );
    // Model metadata names the versions and their history.
    let (_, meta) = http(&addr, "GET", "/v2/models/ensemble", "application/json", b"");
    let meta: serde_json::Value = serde_json::from_slice(&meta).expect("JSON");
    assert_eq!(meta["versions"][0], "A:1,B:1,C:1", "{meta}");
    assert_eq!(
        meta["parameters"]["shards"]["B"]["history"][0]["version"], 1,
        "{meta}"
    );

    // Concurrent requests: while both executors broadcast, the next ones
    // wait and go out together, one broadcast for several requests; each
    // still gets predict's answers for its own rows. Which ones share a call
    // depends on timing: rounds until one has (at most 4).
    let stats = || -> serde_json::Value {
        let (s, b) = http(&addr, "GET", "/v2/models/ensemble/stats", "", b"");
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let v: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
        v["model_stats"][0].clone()
    };
    let n = want.num_rows();
    let mut merged = false;
    for round in 0..4 {
        let before = stats();
        std::thread::scope(|s| {
            for c in 0..16usize {
                let (addr, want) = (&addr, &want);
                s.spawn(move || {
                    for r in 0..8usize {
                        let len = 1 + (c * 5 + r * 3 + round) % 23;
                        let offset = (c * 89 + r * 41) % (n - len);
                        let rows = want.slice(offset, len);
                        let got = infer(addr, &body_of(addr, &rows));
                        assert_equals_predict(&got, &rows, &format!("rows {offset}+{len}"));
                    }
                });
            }
        });
        let after = stats();
        let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
        assert_eq!(delta("inference_count"), 128, "{after}");
        assert!(delta("execution_count") <= 128, "{after}");
        if delta("execution_count") < 128 {
            merged = true;
            break;
        }
    }
    assert!(
        merged,
        "no two concurrent requests shared a broadcast: {}",
        stats()
    );
}

/// A scheduler and workers `w0..w2` sharing `root` as their data root, `w0`
/// also serving on a port of its own with `--min-shards 3`; returns the
/// scheduler's address and w0's serving address.
fn cluster(procs: &mut Procs, root: &Path, logs: &Path) -> (String, String) {
    let sched = procs.serve("scheduler", &["scheduler", "--listen", "127.0.0.1:0"], &[]);
    let front = format!("127.0.0.1:{}", free_port());
    for i in 0..3 {
        start_worker(
            procs,
            &sched,
            root,
            logs,
            i,
            (i == 0).then_some(front.as_str()),
        );
    }
    (sched, front)
}

fn start_worker(
    procs: &mut Procs,
    sched: &str,
    root: &Path,
    logs: &Path,
    i: usize,
    serve: Option<&str>,
) {
    let name = format!("w{i}");
    let root = root.to_string_lossy().into_owned();
    let mut args = vec![
        "worker",
        sched,
        "--name",
        &name,
        "--listen",
        "127.0.0.1:0",
        "--data-root",
        &root,
    ];
    if let Some(s) = serve {
        args.extend(["--serve", s, "--min-shards", "3"]);
    }
    let log = logs.join(format!("{name}-{}.log", procs.0.len()));
    procs.serve_logging(&name, &args, &[], Some(&log));
}

#[test]
fn shard_models_answer_from_any_worker_and_a_lost_worker_degrades_then_returns() {
    let d = workdir();
    let logs = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::default();
    let (sched, w0_front) = cluster(&mut procs, d.path(), logs.path());
    let mut cmd = dagml_in(d.path());
    cmd.args([
        "serve",
        "pipeline.toml",
        "--scheduler",
        &sched,
        "--listen",
        "127.0.0.1:0",
    ]);
    let front = procs.serve_command("serve", cmd, Some(&logs.path().join("serve.log")));
    let want = predicted(d.path());
    let body = body_of(&front, &want);
    let got = infer(&front, &body);
    assert_equals_predict(&got, &want, "the front door");
    // Any worker's serving address answers the same.
    wait_until("w0 sees the shard models", Duration::from_secs(20), || {
        infer(&w0_front, &body).status == 200
    });
    assert_equals_predict(&infer(&w0_front, &body), &want, "w0's --serve");

    // Lose a worker that holds a shard model (not w0, whose front door is
    // asked below).
    let s = shards(&got);
    let (lost_shard, _, lost) = s
        .iter()
        .find(|(_, _, w)| w != "w0")
        .cloned()
        .expect("a shard on another worker than w0");
    procs.kill(&lost);
    let degraded = infer(&front, &body);
    assert_eq!(degraded.status, 200, "{}", degraded.text);
    assert_eq!(
        degraded.parameters["degraded"], true,
        "{}",
        degraded.parameters
    );
    assert!(
        degraded.parameters["missing_shards"]
            .get(&lost_shard)
            .is_some(),
        "{}",
        degraded.parameters
    );
    // w0 asks for all three: it says why it cannot answer.
    let refused = infer(&w0_front, &body);
    assert_eq!(
        refused.status, 503,
        "{} {} (the lost shard {lost_shard} was on {lost})",
        refused.text, refused.parameters
    );
    assert!(
        refused.text.contains("of 3 shard models answered"),
        "{}",
        refused.text
    );

    // The worker comes back under its name and serves its model again, from
    // its data root.
    let i: usize = lost[1..].parse().expect("wN");
    start_worker(&mut procs, &sched, d.path(), logs.path(), i, None);
    wait_until(
        "the returned worker serves",
        Duration::from_secs(30),
        || infer(&front, &body).parameters["degraded"] == false,
    );
    assert_equals_predict(&infer(&front, &body), &want, "after the worker returned");
}

#[test]
fn retraining_a_shard_and_losing_a_worker_under_load_fail_no_request_and_mix_no_versions() {
    let d = workdir();
    let logs = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::default();
    let (sched, _) = cluster(&mut procs, d.path(), logs.path());
    let mut cmd = dagml_in(d.path());
    cmd.args([
        "serve",
        "pipeline.toml",
        "--scheduler",
        &sched,
        "--listen",
        "127.0.0.1:0",
    ]);
    let front = procs.serve_command("serve", cmd, Some(&logs.path().join("serve.log")));
    let want = predicted(d.path());
    let body = Arc::new(body_of(&front, &want));

    // Load: one client, at most 3,000 requests, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, body, front) = (stop.clone(), body.clone(), front.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut failed = Vec::new();
            for _ in 0..3000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let g = infer(&front, &body);
                if g.status != 200 {
                    failed.push(format!("{}: {}", g.status, g.text));
                    continue;
                }
                seen.push(shards(&g));
            }
            (seen, failed)
        })
    };
    // Retrain shard A while it serves.
    let out = dagml_in(d.path())
        .args([
            "run",
            "pipeline.toml",
            "--quiet",
            "--scheduler",
            &sched,
            "--only",
            "ensemble.A",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("dagml run --only");
    assert!(out.status.success(), "{}", common::text(&out));
    wait_until("version 2 of A answers", Duration::from_secs(20), || {
        shards(&infer(&front, &body))
            .iter()
            .any(|(s, v, _)| s == "A" && *v == 2)
    });
    // Then lose a worker: one holding another shard's model than A's new
    // version (A's old version would answer instead, rightly), else any
    // other.
    let now = shards(&infer(&front, &body));
    let a_holder = now
        .iter()
        .find(|(s, _, _)| s == "A")
        .map(|(_, _, w)| w.clone())
        .expect("A answers");
    let holder = now
        .iter()
        .map(|(_, _, w)| w.clone())
        .find(|w| *w != a_holder)
        .or_else(|| {
            ["w0", "w1", "w2"]
                .into_iter()
                .map(String::from)
                .find(|w| *w != a_holder)
        })
        .expect("another worker");
    procs.kill(&holder);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let (seen, failed) = load.join().expect("the load thread");
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        seen.len() > 10,
        "only {} requests were answered",
        seen.len()
    );
    // Each answer names each shard once, with one version.
    for s in &seen {
        let mut names: Vec<&str> = s.iter().map(|(n, _, _)| n.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), s.len(), "{s:?}");
    }
    let a_versions: std::collections::BTreeSet<u64> = seen
        .iter()
        .flat_map(|s| s.iter().filter(|(n, _, _)| n == "A").map(|(_, v, _)| *v))
        .collect();
    assert!(a_versions.contains(&1), "{a_versions:?}");
    // The answers after the retraining are version 2's.
    let last = shards(&infer(&front, &body));
    assert!(last.iter().any(|(s, v, _)| s == "A" && *v == 2), "{last:?}");
}

/// Three workers whose data roots hold three different thirds of the
/// training rows, the run's folder inside every root (as a shared run folder
/// mounted in each node's data root would be).
struct ByWorker {
    root: tempfile::TempDir,
}

impl ByWorker {
    const NAMES: [&'static str; 3] = ["a", "b", "c"];

    fn new() -> ByWorker {
        let root = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(TRAIN).expect("train.csv");
        let mut lines = text.lines();
        let header = lines.next().expect("a header");
        let rows: Vec<&str> = lines.collect();
        let third = rows.len() / 3;
        let w = ByWorker { root };
        for (i, name) in Self::NAMES.iter().enumerate() {
            let dir = w.data_root(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            let mut csv = String::from(header);
            csv.push('\n');
            for r in &rows[i * third..(i + 1) * third] {
                csv.push_str(r);
                csv.push('\n');
            }
            std::fs::write(dir.join("train.csv"), csv).expect("write a shard");
        }
        std::fs::create_dir_all(w.run_dir()).expect("mkdir run");
        let pipeline = PIPELINE.replace(
            "by = \"rows\"\nnames = [\"A\", \"B\", \"C\"]",
            "by = \"worker\"\nnames = [\"a\", \"b\", \"c\"]",
        );
        assert!(pipeline.contains("by = \"worker\""));
        std::fs::write(w.run_dir().join("pipeline.toml"), pipeline).expect("write");
        w
    }

    fn data_root(&self, name: &str) -> std::path::PathBuf {
        match name {
            "a" => self.root.path().to_path_buf(),
            "b" => self.root.path().join("b"),
            _ => self.root.path().join("b/c"),
        }
    }

    fn run_dir(&self) -> std::path::PathBuf {
        self.root.path().join("b/c/run")
    }

    /// `dagml serve` of the pipeline on the cluster of `sched`: the front
    /// door's address.
    fn serve(&self, procs: &mut Procs, sched: &str, logs: &Path) -> String {
        let mut cmd = dagml_in(&self.run_dir());
        cmd.args([
            "serve",
            "pipeline.toml",
            "--scheduler",
            sched,
            "--listen",
            "127.0.0.1:0",
        ]);
        procs.serve_command("serve", cmd, Some(&logs.join("serve.log")))
    }

    /// Worker `name` of the scheduler `sched`, with `root` as its data root,
    /// logging to `logs/NAME.log`.
    fn start(procs: &mut Procs, sched: &str, name: &str, root: &Path, logs: &Path, extra: &[&str]) {
        let root = root.to_string_lossy().into_owned();
        let mut args = vec![
            "worker",
            sched,
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--data-root",
            &root,
        ];
        args.extend_from_slice(extra);
        procs.serve_logging(name, &args, &[], Some(&logs.join(format!("{name}.log"))));
    }
}

#[test]
fn shards_by_worker_train_where_their_rows_are_and_only_models_travel() {
    let w = ByWorker::new();
    let logs = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::default();
    let sched = procs.serve("scheduler", &["scheduler", "--listen", "127.0.0.1:0"], &[]);
    for name in ByWorker::NAMES {
        ByWorker::start(
            &mut procs,
            &sched,
            name,
            &w.data_root(name),
            logs.path(),
            &[],
        );
    }
    let out = dagml_in(&w.run_dir())
        .args(["run", "pipeline.toml", "--scheduler", &sched, "--events"])
        .stdin(Stdio::null())
        .output()
        .expect("dagml run");
    assert!(out.status.success(), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every task that reads a shard's rows ran on that shard's worker: the
    // reads, transforms and split of partition i on worker i, each shard's
    // fit there, and the scoring of its validation part by every model there.
    let mut checked = 0;
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix("started ") else {
            continue;
        };
        let (task, on) = rest.split_once(" on ").expect("task on worker");
        let worker = on.split_whitespace().next().expect("worker");
        let want = if let Some(p) = ["source:houses/p", "transform:prepared/p", "split:shards/p"]
            .iter()
            .find_map(|pre| task.strip_prefix(pre))
        {
            let i: usize = p.parse().expect("partition");
            Some(ByWorker::NAMES[i])
        } else if let Some(s) = task.strip_prefix("fit:ensemble/shard-") {
            Some(s)
        } else {
            task.strip_prefix("evaluate:matrix/score-shards.")
                .and_then(|s| s.split('.').next())
        };
        if let Some(want) = want {
            assert_eq!(worker, want, "{task} ran on {worker}:\n{stderr}");
            checked += 1;
        }
    }
    // 3 reads, 3 transforms, 3 splits, 3 fits, 3 scorings.
    assert_eq!(checked, 15, "{stderr}");
    // The rows never travel: no task that reads them fetches an input from
    // another worker (the driver names every fetch in the events). Only the
    // models do (to the ensemble's model and to be scored on the other
    // shards' validation parts) and the scores (to the tally): those tasks
    // do fetch, which shows the count is there to see.
    let fetches = |prefix: &str| {
        stderr
            .lines()
            .filter(|l| l.starts_with(&format!("started {prefix}")))
            .filter(|l| l.contains("input bytes from other workers"))
            .count()
    };
    for rows in [
        "source:houses",
        "transform:prepared",
        "split:shards",
        "fit:ensemble/shard-",
    ] {
        assert_eq!(fetches(rows), 0, "{rows} fetched rows:\n{stderr}");
    }
    for models in ["fit:ensemble/out", "evaluate:matrix"] {
        assert!(
            fetches(models) > 0,
            "{models} fetches models or scores:\n{stderr}"
        );
    }
    // Three different models: on one shard's validation rows they score
    // differently.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let mut rmse = Vec::new();
    while let Some(l) = lines.next() {
        if l.starts_with("== matrix : ensemble[") && l.contains("on shards.a.validation") {
            let v = lines
                .next()
                .and_then(|r| r.strip_prefix("rmse "))
                .expect("rmse");
            rmse.push(v.trim().to_string());
        }
    }
    assert_eq!(rmse.len(), 3, "{stdout}");
    assert!(
        rmse[0] != rmse[1] && rmse[1] != rmse[2] && rmse[0] != rmse[2],
        "the shard models are not different: {rmse:?}"
    );
    // Served from where they were trained, they answer as the model file.
    let front = w.serve(&mut procs, &sched, logs.path());
    let want = predicted(&w.run_dir());
    let got = infer(&front, &body_of(&front, &want));
    assert_equals_predict(&got, &want, "shards by worker");
    let held: Vec<(String, String)> = shards(&got)
        .into_iter()
        .map(|(s, _, worker)| (s, worker))
        .collect();
    assert_eq!(
        held,
        [("a", "a"), ("b", "b"), ("c", "c")].map(|(s, w)| (s.to_string(), w.to_string()))
    );
}

#[test]
fn a_watching_worker_refits_its_shard_when_its_rows_change_not_when_only_touched() {
    let w = ByWorker::new();
    let logs = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::default();
    let sched = procs.serve("scheduler", &["scheduler", "--listen", "127.0.0.1:0"], &[]);
    for name in ByWorker::NAMES {
        ByWorker::start(
            &mut procs,
            &sched,
            name,
            &w.data_root(name),
            logs.path(),
            &["--watch"],
        );
    }
    let front = w.serve(&mut procs, &sched, logs.path());
    let want = predicted(&w.run_dir());
    let body = body_of(&front, &want);
    let versions = || -> Vec<(String, u64)> {
        shards(&infer(&front, &body))
            .into_iter()
            .map(|(s, v, _)| (s, v))
            .collect()
    };
    let first = [("a", 1), ("b", 1), ("c", 1)].map(|(s, v)| (s.to_string(), v));
    assert_eq!(versions(), first);
    // c's file is written again with the same rows (a new time, the same
    // content); b loses its last 40 rows.
    let c = w.data_root("c").join("train.csv");
    let same = std::fs::read(&c).expect("read c");
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&c, &same).expect("rewrite c");
    let b = w.data_root("b").join("train.csv");
    let text = std::fs::read_to_string(&b).expect("read b");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&b, lines[..lines.len() - 40].join("\n") + "\n").expect("write b");
    wait_until("b refits by itself", Duration::from_secs(60), || {
        versions().iter().any(|(s, v)| s == "b" && *v == 2)
    });
    // Give c's watcher time to have looked (it looks every second).
    std::thread::sleep(Duration::from_secs(3));
    let now = versions();
    assert_eq!(
        now,
        [("a", 1), ("b", 2), ("c", 1)].map(|(s, v)| (s.to_string(), v)),
        "only b's rows changed in content"
    );
    // The answers are the new ensemble's: b's new model differs.
    let got = infer(&front, &body);
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.parameters["degraded"], false);
    let p = |b: &RecordBatch| {
        b.column_by_name("prediction")
            .expect("prediction")
            .to_data()
    };
    assert!(
        p(got.batch.as_ref().expect("batch")) != p(&want),
        "the answers did not change after b's rows did"
    );
}

#[test]
fn a_worker_that_joins_with_a_new_shard_adds_its_model_to_the_served_ensemble_once_trained() {
    let w = ByWorker::new();
    let logs = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::default();
    let sched = procs.serve("scheduler", &["scheduler", "--listen", "127.0.0.1:0"], &[]);
    let start = |procs: &mut Procs, name: &str, root: &Path| {
        ByWorker::start(procs, &sched, name, root, logs.path(), &[]);
    };
    for name in ByWorker::NAMES {
        start(&mut procs, name, &w.data_root(name));
    }
    let front = w.serve(&mut procs, &sched, logs.path());
    let three = predicted(&w.run_dir());
    let body = body_of(&front, &three);
    assert_equals_predict(&infer(&front, &body), &three, "three shards");
    // Worker d joins with rows of its own (its data root is the run folder,
    // so the run folder is inside it too), and the pipeline names it.
    let d_root = w.run_dir();
    let text = std::fs::read_to_string(TRAIN).expect("train.csv");
    let d_rows: Vec<&str> = text.lines().take(1 + 300).collect();
    std::fs::write(d_root.join("train.csv"), d_rows.join("\n") + "\n").expect("write d");
    start(&mut procs, "d", &d_root);
    let pipeline = w.run_dir().join("pipeline.toml");
    let four = std::fs::read_to_string(&pipeline)
        .expect("pipeline")
        .replace(
            "names = [\"a\", \"b\", \"c\"]",
            "names = [\"a\", \"b\", \"c\", \"d\"]",
        );
    assert!(four.contains("\"d\"]"));
    std::fs::write(&pipeline, four).expect("write pipeline");
    // Until d's model is trained the front door serves the three.
    let shards_now = || -> Vec<String> {
        shards(&infer(&front, &body))
            .into_iter()
            .map(|(s, _, _)| s)
            .collect()
    };
    assert_eq!(shards_now(), ["a", "b", "c"]);
    // Training d's shard alone, on d: the front door adds it by itself.
    let out = dagml_in(&w.run_dir())
        .args([
            "run",
            "pipeline.toml",
            "--scheduler",
            &sched,
            "--only",
            "ensemble.d",
            "--events",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("dagml run --only");
    assert!(out.status.success(), "{}", common::text(&out));
    let events = String::from_utf8_lossy(&out.stderr);
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("started fit:ensemble/shard-d on d")),
        "{events}"
    );
    wait_until("d's model serves", Duration::from_secs(20), || {
        shards_now() == ["a", "b", "c", "d"]
    });
    // The four answer as the model file of the four-shard pipeline does (its
    // members are fitted from the same seed and rows).
    let out = dagml_in(&w.run_dir())
        .args(["run", "pipeline.toml", "--scheduler", &sched, "--quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("dagml run");
    assert!(out.status.success(), "{}", common::text(&out));
    let four = predicted(&w.run_dir());
    let got = infer(&front, &body);
    assert_equals_predict(&got, &four, "four shards");
    assert_eq!(
        got.parameters["shards"]["d"]["worker"], "d",
        "{}",
        got.parameters
    );
}
