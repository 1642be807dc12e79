//! The cluster end to end: a scheduler and workers as separate processes on
//! 127.0.0.1 (and the embedded cluster), running a small forest pipeline and
//! producing the same files, byte for byte, as the in-process run.
//!
//! Every process a test starts is owned by a guard (`common::Procs`) that kills
//! it on drop, so they are stopped whether the test passes or panics. No
//! assertion depends on timing: waits are on process output and exit.

mod common;

use common::Procs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/cluster_forest.toml"
);
const OUTPUTS: [&str; 3] = [
    "out/forest.model",
    "out/metrics.json",
    "out/predictions.parquet",
];

impl Procs {
    /// `dagml run pipeline.toml --quiet --events --scheduler SCHED` in `dir`:
    /// `on_event` sees each task-event line (stderr) as it comes and may act on
    /// the cluster; returns the client's output once it has exited. The client
    /// belongs to `self` while it runs, so it is killed if the test fails.
    fn run_watching(
        &mut self,
        dir: &Path,
        sched: &str,
        mut on_event: impl FnMut(&mut Procs, &str, u32),
    ) -> Output {
        let mut run = Command::new(env!("CARGO_BIN_EXE_dagml"));
        run.current_dir(dir)
            .args([
                "run",
                "pipeline.toml",
                "--quiet",
                "--events",
                "--scheduler",
                sched,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("DAGML_TOKEN");
        let mut child = run.spawn().expect("start run");
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr");
        self.0.push(("client".into(), child));
        let mut log = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log.push_str(&line);
            log.push('\n');
            on_event(self, &line, pid);
        }
        let pos = self
            .0
            .iter()
            .position(|(n, _)| n == "client")
            .expect("client");
        let (_, mut client) = self.0.remove(pos);
        let mut stdout = Vec::new();
        if let Some(out) = client.stdout.take() {
            std::io::Read::read_to_end(&mut BufReader::new(out), &mut stdout).expect("read stdout");
        }
        let status = client.wait().expect("wait");
        Output {
            status,
            stdout,
            stderr: log.into_bytes(),
        }
    }

    /// A scheduler and `n` workers named w0, w1, ...
    fn cluster(&mut self, n: usize, token: Option<&str>) -> String {
        match token {
            Some(t) => self.cluster_with(n, &[("DAGML_TOKEN", t)]),
            None => self.cluster_with(n, &[]),
        }
    }

    /// [`Procs::cluster`] with these environment variables on every server.
    fn cluster_with(&mut self, n: usize, env: &[(&str, &str)]) -> String {
        let sched = self.serve("scheduler", &["scheduler", "--listen", "127.0.0.1:0"], env);
        for i in 0..n {
            let name = format!("w{i}");
            self.serve(
                &name,
                &[
                    "worker",
                    &sched,
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    "2GB",
                    "--name",
                    &name,
                    "--listen",
                    "127.0.0.1:0",
                ],
                env,
            );
        }
        sched
    }
}

/// A fresh folder holding the fixture as `pipeline.toml`.
fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::copy(FIXTURE, d.path().join("pipeline.toml")).expect("copy fixture");
    d
}

fn dagml_run(dir: &Path, extra: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dagml"));
    cmd.current_dir(dir)
        .args(["run", "pipeline.toml", "--quiet"])
        .args(extra)
        .stdin(Stdio::null())
        .env_remove("DAGML_TOKEN");
    if let Some(t) = token {
        cmd.env("DAGML_TOKEN", t);
    }
    cmd.output().expect("run dagml")
}

fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    OUTPUTS
        .iter()
        .map(|p| {
            let bytes = std::fs::read(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
            (p.to_string(), bytes)
        })
        .collect()
}

/// The in-process run's stdout and files (computed once per test binary).
/// A run's stdout and its output files (name, bytes).
type RunBytes = (Vec<u8>, Vec<(String, Vec<u8>)>);

fn reference() -> &'static RunBytes {
    static REF: std::sync::OnceLock<RunBytes> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let d = workdir();
        let out = dagml_run(d.path(), &["--in-process"], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.stdout, outputs(d.path()))
    })
}

fn assert_same_as_in_process(dir: &Path, out: &Output) {
    assert!(
        out.status.success(),
        "cluster run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (stdout, files) = reference();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(stdout)
    );
    for ((name, want), (_, got)) in files.iter().zip(outputs(dir)) {
        assert!(*want == got, "{name} differs from the in-process run");
    }
}

#[test]
fn three_worker_processes_give_the_in_process_model() {
    let mut procs = Procs::default();
    let sched = procs.cluster(3, None);
    let d = workdir();
    let out = dagml_run(d.path(), &["--scheduler", &sched], None);
    assert_same_as_in_process(d.path(), &out);
    drop(procs);
}

#[test]
fn a_worker_killed_mid_fit_does_not_change_the_model() {
    let mut procs = Procs::default();
    let sched = procs.cluster(3, None);
    let d = workdir();
    // Kill the first worker that starts fitting trees, as soon as it does.
    let mut killed = None;
    let out = procs.run_watching(d.path(), &sched, |procs, line, _| {
        if killed.is_none() && line.starts_with("started fit:forest/") {
            let worker = line.rsplit_once(" on ").map(|(_, w)| w).unwrap_or("");
            let worker = worker.split_whitespace().next().unwrap_or("").to_string();
            procs.kill(&worker);
            killed = Some(worker);
        }
    });
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let killed = killed.unwrap_or_else(|| panic!("no fit task started:\n{log}"));
    assert!(log.contains(&format!("worker {killed} lost")), "{log}");
    assert_same_as_in_process(d.path(), &out);
}

#[test]
fn calls_without_the_token_are_refused() {
    let mut procs = Procs::default();
    let sched = procs.cluster(1, Some("s3cret-token"));
    let d = workdir();
    let out = dagml_run(d.path(), &["--scheduler", &sched], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
    let wrong = dagml_run(d.path(), &["--scheduler", &sched], Some("wrong"));
    assert!(!wrong.status.success());
    let ok = dagml_run(d.path(), &["--scheduler", &sched], Some("s3cret-token"));
    assert_same_as_in_process(d.path(), &ok);
}

#[test]
fn the_embedded_cluster_gives_the_in_process_model_on_1_2_and_4_workers() {
    // No flag: the embedded cluster, one worker per core.
    let flags: [&[&str]; 4] = [
        &[],
        &["--workers", "1"],
        &["--workers", "2"],
        &["--workers", "4", "--threads-per-worker", "2"],
    ];
    for extra in flags {
        let d = workdir();
        let out = dagml_run(d.path(), extra, None);
        assert_same_as_in_process(d.path(), &out);
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir`.
fn self_signed(dir: &Path) -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("generate a certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

#[test]
fn a_tls_cluster_gives_the_same_model_and_refuses_plain_connections() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path());
    let mut procs = Procs::default();
    let sched = procs.cluster_with(
        2,
        &[
            ("DAGML_TLS_CERT", &cert),
            ("DAGML_TLS_KEY", &key),
            ("DAGML_TLS_CA", &cert),
        ],
    );
    let d = workdir();
    // A client that does not speak TLS gets nowhere.
    let plain = dagml_run(d.path(), &["--scheduler", &sched], None);
    assert!(!plain.status.success());
    // One that trusts the certificate runs the pipeline.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dagml"));
    cmd.current_dir(d.path())
        .args(["run", "pipeline.toml", "--quiet", "--scheduler", &sched])
        .stdin(Stdio::null())
        .env_remove("DAGML_TOKEN")
        .env("DAGML_TLS_CA", &cert);
    let out = cmd.output().expect("run dagml");
    assert_same_as_in_process(d.path(), &out);
}

#[test]
fn with_no_worker_left_the_run_fails_naming_the_task_the_worker_and_the_cause() {
    let mut procs = Procs::default();
    let sched = procs.cluster(1, None);
    let d = workdir();
    // Kill the only worker as soon as it starts fitting; the run then waits
    // for a worker (10 s) and fails.
    let mut killed = false;
    let out = procs.run_watching(d.path(), &sched, |procs, line, _| {
        if !killed && line.starts_with("started fit:forest/") {
            procs.kill("w0");
            killed = true;
        }
    });
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(killed, "no fit task started:\n{log}");
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("no worker left"), "{log}");
    assert!(log.contains("task `fit:forest/"), "{log}");
    assert!(log.contains("worker `w0`"), "{log}");
    assert!(log.contains("attempt 1 of 3"), "{log}");
}

#[test]
fn a_failing_task_is_retried_three_times_then_the_run_fails_with_its_cause() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("bad.csv"),
        "a,b,y\n1,2,0\n3,4,1\n5,6\n7,8,1\n",
    )
    .expect("write");
    std::fs::write(
        d.path().join("pipeline.toml"),
        r#"
[pipeline]
name = "bad_csv"
seed = 1

[sources.rows]
kind = "csv"
path = "bad.csv"

[models.tree]
estimator = "decision_tree"
input = "rows"
target = "y"

[evaluations.fit]
model = "tree"
data = ["rows"]
metrics = ["accuracy"]
"#,
    )
    .expect("write");
    let mut procs = Procs::default();
    let sched = procs.cluster(2, None);
    for extra in [vec!["--scheduler", sched.as_str()], vec!["--workers", "2"]] {
        let out = dagml_run(d.path(), &[&["--events"][..], &extra].concat(), None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert_eq!(err.matches("retrying source:rows/").count(), 2, "{err}");
        assert!(err.contains("after 3 attempts (of 3)"), "{err}");
        assert!(err.contains("bad.csv"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_worker_with_a_data_root_refuses_files_outside_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_s = root.path().to_string_lossy().into_owned();
    let mut procs = Procs::default();
    let sched = procs.serve("scheduler", &["scheduler", "--listen", "127.0.0.1:0"], &[]);
    procs.serve(
        "w0",
        &[
            "worker",
            &sched,
            "--name",
            "w0",
            "--listen",
            "127.0.0.1:0",
            "--data-root",
            &root_s,
        ],
        &[],
    );
    // Inside the root, with its files inside: runs.
    let inside = root.path().join("project");
    std::fs::create_dir(&inside).expect("mkdir");
    std::fs::copy(FIXTURE, inside.join("pipeline.toml")).expect("copy");
    let ok = dagml_run(&inside, &["--scheduler", &sched], None);
    assert_same_as_in_process(&inside, &ok);
    // An output that climbs out of the root: refused before any task runs.
    let text = std::fs::read_to_string(FIXTURE).expect("read fixture");
    let escaping = text.replacen("out/forest.model", "../../escaped.model", 1);
    assert_ne!(text, escaping, "the fixture writes out/forest.model");
    std::fs::write(inside.join("pipeline.toml"), escaping).expect("write");
    let out = dagml_run(&inside, &["--scheduler", &sched], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("outside this worker's data root"), "{err}");
    // A run folder outside the root: refused.
    let elsewhere = workdir();
    let out = dagml_run(elsewhere.path(), &["--scheduler", &sched], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("outside this worker's data root"), "{err}");
}

#[test]
fn ctrl_c_on_the_client_cancels_the_run_on_the_cluster() {
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("scheduler.log");
    let mut procs = Procs::default();
    let sched = procs.serve_logging(
        "scheduler",
        &["scheduler", "--listen", "127.0.0.1:0"],
        &[],
        Some(&log),
    );
    procs.serve(
        "w0",
        &["worker", &sched, "--name", "w0", "--listen", "127.0.0.1:0"],
        &[],
    );
    let d = workdir();
    let mut sent = false;
    let out = procs.run_watching(d.path(), &sched, |_, line, pid| {
        if !sent && line.starts_with("started fit:forest/") {
            let ok = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "could not send SIGINT");
            sent = true;
        }
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(sent, "no fit task started:\n{err}");
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // The scheduler notices the client is gone and cancels the run on its
    // workers (bounded wait on its log, not a timing assertion).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("failed: the run was cancelled") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler did not cancel the run:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The worker is free again: a new run completes with the usual bytes.
    let again = dagml_run(d.path(), &["--scheduler", &sched], None);
    assert_same_as_in_process(d.path(), &again);
}
