//! The cluster end to end: a scheduler and workers as separate processes on
//! 127.0.0.1 (and the embedded cluster), running a small forest pipeline and
//! producing the same files, byte for byte, as the in-process run.
//!
//! Every process a test starts is owned by a guard (`common::Procs`) that kills
//! it on drop, so they are stopped whether the test passes or panics. No
//! assertion depends on timing: waits are on process output and exit.

mod common;

use common::{FIXTURE, Procs, assert_same_as_in_process, workdir};
use dagml::cluster::auth::{Attach, Tls};
use dagml::cluster::proto::CancelRunRequest;
use dagml::cluster::proto::worker_client::WorkerClient;
use dagml::cluster::{ClusterError, client, flight::Peers};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The two kinds of cluster the tests here run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `dagml scheduler` and `dagml worker` processes.
    Processes,
    /// The embedded cluster inside `dagml run`.
    Embedded,
}

impl Procs {
    /// `dagml run pipeline.toml --quiet --events --scheduler SCHED` in `dir`:
    /// see [`Procs::watch`].
    fn run_watching(
        &mut self,
        dir: &Path,
        sched: &str,
        on_event: impl FnMut(&mut Procs, &str, u32),
    ) -> Output {
        let run = dagml_cmd(dir, &["--events", "--scheduler", sched], None);
        self.watch(run, on_event)
    }

    /// Start `run` (a `dagml run`): `on_event` sees each stderr line (task
    /// events with `--events`) as it comes and may act on the cluster; returns
    /// the client's output once it has exited. The client belongs to `self`
    /// while it runs, so it is killed if the test fails.
    fn watch(
        &mut self,
        mut run: Command,
        mut on_event: impl FnMut(&mut Procs, &str, u32),
    ) -> Output {
        run.stdout(Stdio::piped()).stderr(Stdio::piped());
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
        self.cluster_full(n, env, "2GB", None).0
    }

    /// A scheduler and `n` workers of `memory_limit` each, with these
    /// environment variables; each worker's stderr goes to `logs/wI.log` when
    /// `logs` is given. Returns the scheduler's address and the workers'.
    fn cluster_full(
        &mut self,
        n: usize,
        env: &[(&str, &str)],
        memory_limit: &str,
        logs: Option<&Path>,
    ) -> (String, Vec<String>) {
        let sched = self.serve("scheduler", &["scheduler", "--listen", "127.0.0.1:0"], env);
        let mut workers = Vec::new();
        for i in 0..n {
            let name = format!("w{i}");
            let log = logs.map(|d| d.join(format!("{name}.log")));
            workers.push(self.serve_logging(
                &name,
                &[
                    "worker",
                    &sched,
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    memory_limit,
                    "--name",
                    &name,
                    "--listen",
                    "127.0.0.1:0",
                ],
                env,
                log.as_deref(),
            ));
        }
        (sched, workers)
    }
}

/// `dagml run pipeline.toml --quiet EXTRA` in `dir`, with DAGML_TOKEN set to
/// `token` (unset when None) and none of the test's own DAGML_* settings.
fn dagml_cmd(dir: &Path, extra: &[&str], token: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dagml"));
    cmd.current_dir(dir)
        .args(["run", "pipeline.toml", "--quiet"])
        .args(extra)
        .stdin(Stdio::null());
    for var in ["DAGML_TOKEN", "DAGML_EMBEDDED_FAULT", "DAGML_EMBEDDED_HOLD"] {
        cmd.env_remove(var);
    }
    if let Some(t) = token {
        cmd.env("DAGML_TOKEN", t);
    }
    cmd
}

fn dagml_run(dir: &Path, extra: &[&str], token: Option<&str>) -> Output {
    dagml_cmd(dir, extra, token).output().expect("run dagml")
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
    a_worker_lost_at_a_task_does_not_change_the_model(Kind::Processes, "fit:forest/");
}

#[test]
fn an_embedded_worker_stopped_mid_fit_does_not_change_the_model() {
    a_worker_lost_at_a_task_does_not_change_the_model(Kind::Embedded, "fit:forest/");
}

#[test]
fn a_worker_killed_holding_tree_groups_has_them_recomputed() {
    a_worker_lost_at_a_task_does_not_change_the_model(Kind::Processes, "fit:forest/out");
}

#[test]
fn an_embedded_worker_stopped_holding_tree_groups_has_them_recomputed() {
    a_worker_lost_at_a_task_does_not_change_the_model(Kind::Embedded, "fit:forest/out");
}

/// Three workers; the first one handed a task whose id starts with `at` dies
/// as it gets it (a process: SIGKILL as soon as the event says the task
/// started; the embedded cluster: DAGML_EMBEDDED_FAULT stops the worker as it
/// is handed the task). `fit:forest/` is the first tree group; `fit:forest/out`
/// gathers the groups, and goes to the worker holding most of them, so that
/// worker's groups must be computed again. The run still completes with the
/// in-process bytes, and its events show the loss and tasks running again
/// elsewhere.
fn a_worker_lost_at_a_task_does_not_change_the_model(kind: Kind, at: &str) {
    let mut procs = Procs::default();
    let d = workdir();
    let mut killed: Option<String> = None;
    let started_at = format!("started {at}");
    let out = match kind {
        Kind::Processes => {
            let sched = procs.cluster(3, None);
            procs.run_watching(d.path(), &sched, |procs, line, _| {
                if killed.is_none() && line.starts_with(&started_at) {
                    let worker = line.rsplit_once(" on ").map(|(_, w)| w).unwrap_or("");
                    let worker = worker.split_whitespace().next().unwrap_or("").to_string();
                    procs.kill(&worker);
                    killed = Some(worker);
                }
            })
        }
        Kind::Embedded => {
            let mut run = dagml_cmd(d.path(), &["--workers", "3", "--events"], None);
            run.env(
                "DAGML_EMBEDDED_FAULT",
                format!("kill-worker:any:at-task:{at}"),
            );
            procs.watch(run, |_, line, _| {
                let lost = line
                    .strip_prefix("worker ")
                    .and_then(|l| l.split_once(" lost: "));
                if let (None, Some((worker, _))) = (&killed, lost) {
                    killed = Some(worker.to_string());
                }
            })
        }
    };
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let killed = killed.unwrap_or_else(|| panic!("no worker was killed:\n{log}"));
    let (before, after) = log
        .split_once(&format!("worker {killed} lost"))
        .unwrap_or_else(|| panic!("worker {killed} was not declared lost:\n{log}"));
    // It had been handed such a task; after the loss, tasks it had been handed
    // (or whose outputs it held) ran again, on other workers, and nothing
    // finished on it.
    let on_killed = format!(" on {killed} ");
    let started_before: Vec<&str> = before
        .lines()
        .filter_map(|l| l.strip_prefix("started "))
        .collect();
    assert!(
        started_before
            .iter()
            .any(|l| l.starts_with(at) && l.contains(&on_killed)),
        "{log}"
    );
    let task_of = |l: &str| l.split(" on ").next().unwrap_or("").to_string();
    let again: Vec<&str> = after
        .lines()
        .filter_map(|l| l.strip_prefix("started "))
        .filter(|l| started_before.iter().any(|b| task_of(b) == task_of(l)))
        .collect();
    assert!(
        !again.is_empty(),
        "no task ran again after the loss:\n{log}"
    );
    assert!(again.iter().all(|l| !l.contains(&on_killed)), "{log}");
    let finished_on_killed = format!(" on {killed}");
    assert!(
        !after
            .lines()
            .any(|l| l.starts_with("finished ") && l.ends_with(&finished_on_killed)),
        "{log}"
    );
    if kind == Kind::Embedded {
        // The task it was handed never ran there: it ran again as a second
        // attempt. (A process may be killed just after its task finished, so
        // there only some task running again is certain.)
        assert!(
            again
                .iter()
                .any(|l| l.starts_with(at) && l.contains("(attempt 2")),
            "{log}"
        );
        if at == "fit:forest/out" {
            // Tree groups that had finished on it were computed again.
            let finished_there: Vec<String> = before
                .lines()
                .filter_map(|l| l.strip_prefix("finished "))
                .filter_map(|l| l.strip_suffix(&finished_on_killed))
                .filter(|t| t.starts_with("fit:forest/g"))
                .map(str::to_string)
                .collect();
            assert!(!finished_there.is_empty(), "{log}");
            assert!(
                again.iter().any(|l| finished_there.contains(&task_of(l))),
                "no tree group was recomputed:\n{log}"
            );
        }
    }
    assert_same_as_in_process(d.path(), &out);
}

/// Calls with `token` (None: none) to the scheduler's gRPC service and to each
/// worker's gRPC control service and Flight service: each is answered, with a
/// refusal as unauthenticated (so the servers are up, and checking).
fn assert_refused(sched: &str, workers: &[String], token: Option<&str>) {
    let limit = Duration::from_secs(30);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tls = Tls::default();
        let attach = || Attach::new(token, &tls).expect("attach");
        let status = tokio::time::timeout(limit, client::status(sched, token, &tls))
            .await
            .expect("the scheduler did not answer in time");
        match status {
            Err(ClusterError::Rpc(s)) => {
                assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s}")
            }
            other => panic!("the scheduler took a call with token {token:?}: {other:?}"),
        }
        for w in workers {
            let fetched = tokio::time::timeout(limit, Peers::new(attach()).fetch(w, "run1/x"))
                .await
                .expect("the worker's Flight service did not answer in time");
            match fetched {
                Err(e) => assert!(e.contains("missing or wrong token"), "{w}: {e}"),
                Ok(_) => panic!("{w} served a partition to a call with token {token:?}"),
            }
            let channel = attach().channel(w).expect("channel");
            let mut control = WorkerClient::with_interceptor(channel, attach());
            let cancel = control.cancel_run(CancelRunRequest {
                run_id: "run1".into(),
            });
            let cancelled = tokio::time::timeout(limit, cancel)
                .await
                .expect("the worker's control service did not answer in time");
            match cancelled {
                Err(s) => assert_eq!(s.code(), tonic::Code::Unauthenticated, "{w}: {s}"),
                Ok(_) => panic!("{w} took a call with token {token:?}"),
            }
        }
    });
}

#[test]
fn a_worker_with_a_wrong_token_exits_naming_the_cause() {
    // A scheduler that is up refuses the token: retrying cannot help, so the
    // worker stops with an error instead of staying up doing nothing.
    let mut procs = Procs::default();
    let sched = procs.serve(
        "scheduler",
        &["scheduler", "--listen", "127.0.0.1:0"],
        &[("DAGML_TOKEN", "s3cret-token")],
    );
    let mut worker = Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args([
            "worker",
            &sched,
            "--listen",
            "127.0.0.1:0",
            "--name",
            "wrong",
        ])
        .env("DAGML_TOKEN", "not-the-token")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker");
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = worker.try_wait().expect("wait") {
            break Some(st);
        }
        if t0.elapsed() > std::time::Duration::from_secs(20) {
            let _ = worker.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = worker.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let status = status.unwrap_or_else(|| panic!("the worker stayed up: {err}"));
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("refused this worker") && err.contains("DAGML_TOKEN"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-token"),
        "the token is never logged: {err}"
    );
}

#[test]
fn calls_without_the_token_are_refused() {
    let mut procs = Procs::default();
    let (sched, workers) = procs.cluster_full(1, &[("DAGML_TOKEN", "s3cret-token")], "2GB", None);
    assert_refused(&sched, &workers, None);
    assert_refused(&sched, &workers, Some("wrong"));
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

#[test]
fn the_embedded_cluster_refuses_calls_without_its_own_token() {
    // Its token is its own and random: with DAGML_TOKEN unset, and with it set
    // (its value is not the embedded cluster's token either), calls without
    // the cluster's token are refused while the run itself completes.
    for env_token in [None, Some("s3cret-token")] {
        let d = workdir();
        let go = d.path().join("go");
        let mut run = dagml_cmd(d.path(), &["--workers", "2", "--events"], env_token);
        run.env("DAGML_EMBEDDED_HOLD", &go);
        let mut sched = None;
        let mut workers = Vec::new();
        let mut procs = Procs::default();
        let out = procs.watch(run, |_, line, _| {
            if let Some(a) = line.strip_prefix("embedded scheduler listening on ") {
                sched = Some(a.to_string());
            }
            let worker = line.strip_prefix("embedded worker ");
            if let Some((_, a)) = worker.and_then(|l| l.split_once(" listening on ")) {
                workers.push(a.to_string());
                if workers.len() == 2 {
                    let s = sched.as_deref().expect("the scheduler's line comes first");
                    assert_refused(s, &workers, None);
                    if env_token.is_some() {
                        assert_refused(s, &workers, env_token);
                    }
                    std::fs::write(&go, "").expect("write the go file");
                }
            }
        });
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(go.exists(), "no addresses printed, nothing checked:\n{log}");
        assert_same_as_in_process(d.path(), &out);
    }
}

#[test]
fn worker_processes_past_their_spill_threshold_spill_and_give_the_in_process_model() {
    spills_and_gives_the_in_process_model(Kind::Processes);
}

#[test]
fn embedded_workers_past_their_spill_threshold_spill_and_give_the_in_process_model() {
    spills_and_gives_the_in_process_model(Kind::Embedded);
}

/// Each worker's memory limit, far below the fixture's partitions (about
/// 100 KB each): nearly every partition goes past the spill threshold.
const SMALL_LIMIT: &str = "200KB";

/// Two workers of [`SMALL_LIMIT`] each: partitions are spilled to Arrow IPC
/// files (each spill is a line in the worker's log) and read back, and the
/// outputs are the in-process run's, byte for byte.
fn spills_and_gives_the_in_process_model(kind: Kind) {
    let mut procs = Procs::default();
    let d = workdir();
    let (out, log) = match kind {
        Kind::Processes => {
            let logs = tempfile::tempdir().expect("tempdir");
            let (sched, _) = procs.cluster_full(2, &[], SMALL_LIMIT, Some(logs.path()));
            let out = dagml_run(d.path(), &["--scheduler", &sched], None);
            let log: String = ["w0.log", "w1.log"]
                .iter()
                .map(|f| std::fs::read_to_string(logs.path().join(f)).unwrap_or_default())
                .collect();
            (out, log)
        }
        Kind::Embedded => {
            let extra = ["--workers", "2", "--memory-limit", SMALL_LIMIT, "--events"];
            let out = dagml_run(d.path(), &extra, None);
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            (out, log)
        }
    };
    let spills: Vec<&str> = log.lines().filter(|l| l.contains(": spilled `")).collect();
    assert!(!spills.is_empty(), "nothing was spilled:\n{log}");
    for l in &spills {
        let path = l.rsplit_once(" to ").map(|(_, p)| Path::new(p));
        assert!(
            path.is_some_and(|p| p.extension().is_some_and(|e| e == "arrow")
                && p.parent().is_some_and(|d| d.ends_with("spill"))),
            "{l}"
        );
        // The embedded workers' own data roots are gone with the run.
        let root = path.and_then(|p| p.parent()).and_then(|d| d.parent());
        if kind == Kind::Embedded
            && let Some(root) = root
        {
            assert!(!root.exists(), "{} is left behind", root.display());
        }
    }
    assert_same_as_in_process(d.path(), &out);
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
fn a_bad_data_error_is_not_retried_and_reads_the_same_on_every_kind_of_run() {
    let d = tempfile::tempdir().expect("tempdir");
    // Line 4 of the CSV is malformed: the read fails the same way every time,
    // so trying again cannot help.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad_csv");
    for f in ["bad.csv", "pipeline.toml"] {
        std::fs::copy(fixture.join(f), d.path().join(f)).expect("copy");
    }
    let mut procs = Procs::default();
    let sched = procs.cluster(2, None);
    let mut causes = Vec::new();
    for extra in [
        vec!["--scheduler", sched.as_str()],
        vec!["--workers", "2"],
        vec!["--in-process"],
    ] {
        let out = dagml_run(d.path(), &[&["--events"][..], &extra].concat(), None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(!err.contains("retrying"), "{err}");
        assert!(err.contains("task `source:rows/p0` failed"), "{err}");
        assert!(err.contains("(attempt 1 of "), "{err}");
        assert!(err.contains("bad data: "), "{err}");
        assert!(err.contains("bad.csv"), "{err}");
        assert!(err.contains("hint: fix the data"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        // The cause is the kernel's own words, whichever way the run went.
        let cause = err
            .split("bad data: ")
            .nth(1)
            .and_then(|c| c.lines().next())
            .unwrap_or_default()
            .to_string();
        causes.push(cause);
    }
    assert!(
        causes.iter().all(|c| c == &causes[0] && !c.is_empty()),
        "{causes:?}"
    );
}

#[test]
fn a_missing_column_is_reported_once_at_once_on_the_cluster() {
    // `check` without `--data` cannot see a CSV's columns, so a feature that is
    // not in the file is found by the fit. It is bad data: the same input
    // fails again, so the first attempt's error is the run's, with no retry.
    let d = tempfile::tempdir().expect("tempdir");
    let mut csv = String::from("a,b,y\n");
    for i in 0..40 {
        csv.push_str(&format!("{},{},{}\n", i % 5, i % 3, i % 2));
    }
    std::fs::write(d.path().join("rows.csv"), csv).expect("write");
    std::fs::write(
        d.path().join("pipeline.toml"),
        r#"
[pipeline]
name = "missing_column"

[sources.rows]
kind = "csv"
path = "rows.csv"

[models.m]
estimator = "decision_tree"
input = "rows"
target = "y"
features = ["a", "nope"]

[evaluations.e]
model = "m"
data = ["rows"]
metrics = ["accuracy"]
"#,
    )
    .expect("write");
    let t0 = std::time::Instant::now();
    let out = dagml_run(d.path(), &["--events", "--workers", "2"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("`nope`"), "{err}");
    assert!(err.contains("bad data: "), "{err}");
    assert!(
        err.contains("(attempt 1 of 3; bad data is not retried)"),
        "{err}"
    );
    assert!(!err.contains("retrying"), "{err}");
    // At once: no back-off between attempts that cannot help.
    assert!(t0.elapsed() < std::time::Duration::from_secs(20), "{err}");
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

/// Shards by file, run on a scheduler and workers started in another folder
/// than the client's: every process lists the files of the run's folder (the
/// client's), not of its own working folder, and the metrics are the
/// in-process run's bytes.
#[test]
fn shards_by_file_list_the_runs_folder_on_every_process() {
    let d = tempfile::tempdir().expect("tempdir");
    let regions = d.path().join("regions");
    std::fs::create_dir(&regions).expect("mkdir");
    for (name, slope, n) in [("east", 2.0, 40), ("north", -3.0, 55), ("west", 0.5, 47)] {
        let rows: String = (0..n)
            .map(|i| {
                let x = i as f64 / 7.0 - 3.0;
                format!("{x},{name},{}\n", slope * x + 1.0)
            })
            .collect();
        std::fs::write(
            regions.join(format!("{name}.csv")),
            format!("x,region,y\n{rows}"),
        )
        .expect("write");
    }
    std::fs::write(
        d.path().join("pipeline.toml"),
        r#"
[pipeline]
name = "files"
seed = 3

[sources.rows]
kind = "csv"
path = "regions"

[splits.regions]
kind = "shards"
input = "rows"
by = "file"

[models.lines]
estimator = "linear_regression"
per_shard = true
combine = "average"
input = "regions"
target = "y"
features = ["x"]

[evaluations.matrix]
model = "lines"
data = "regions"
metrics = ["rmse"]

[outputs.metrics]
kind = "metrics"
path = "out/metrics.json"
"#,
    )
    .expect("write");
    let run = |extra: &[&str]| {
        let out = dagml_cmd(d.path(), extra, None)
            .output()
            .expect("run dagml");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        std::fs::read(d.path().join("out/metrics.json")).expect("metrics written")
    };
    let reference = run(&["--in-process"]);
    // The servers' working folder has no `regions/`: before, the scheduler
    // listed its own folder and planned no shard at all.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::default();
    let mut sched_cmd = common::dagml(None);
    sched_cmd
        .args(["scheduler", "--listen", "127.0.0.1:0"])
        .current_dir(elsewhere.path());
    let sched = procs.serve_command("scheduler", sched_cmd, None);
    for i in 0..2 {
        let name = format!("w{i}");
        let mut cmd = common::dagml(None);
        cmd.args(["worker", &sched, "--name", &name, "--listen", "127.0.0.1:0"])
            .current_dir(elsewhere.path());
        procs.serve_command(&name, cmd, None);
    }
    assert_eq!(run(&["--scheduler", &sched]), reference);
    assert_eq!(run(&["--workers", "2"]), reference);
}

/// The fixture with its source grown to `rows` rows in one partition.
fn one_big_partition(dir: &Path, rows: &str) {
    let text = std::fs::read_to_string(common::FIXTURE)
        .expect("fixture")
        .replace("rows = 6_000", &format!("rows = {rows}"))
        .replace("partitions = 4", "partitions = 1");
    assert!(text.contains(rows), "the fixture's source changed");
    std::fs::write(dir.join("pipeline.toml"), text).expect("write");
}

#[test]
fn an_embedded_run_whose_partition_cannot_fit_in_this_machine_is_refused() {
    // The embedded cluster shares this machine's memory: 10^12 rows in one
    // partition cannot fit in it.
    let d = tempfile::tempdir().expect("tempdir");
    one_big_partition(d.path(), "1_000_000_000_000");
    let out = dagml_cmd(d.path(), &["--workers", "2"], None)
        .output()
        .expect("run dagml");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("this machine has"), "{err}");
}

/// Temporary files (`.NAME.dagml-XXXXXX.tmp`) under `dir/out`.
fn temporaries_in_out(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("out"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".dagml-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The worker the line `finished TASK on WORKER` names, if TASK is `task`.
fn finished_on<'a>(line: &'a str, task: &str) -> Option<&'a str> {
    line.strip_prefix("finished ")?
        .strip_prefix(task)?
        .strip_prefix(" on ")
        .map(str::trim)
}

/// A worker process killed (SIGKILL, or SIGTERM: drained) just after it
/// staged the model file: the scheduler writes the model again elsewhere, and
/// the client, putting the run's outputs in place, removes the killed
/// worker's staged twin. The run gives the in-process bytes and leaves no
/// temporary file.
fn a_worker_stopped_after_staging_an_output_leaves_no_temporary(signal: &str) {
    let mut procs = Procs::default();
    let sched = procs.cluster(3, None);
    let d = workdir();
    let mut stopped: Option<String> = None;
    let out = procs.run_watching(d.path(), &sched, |procs, line, _| {
        if stopped.is_none()
            && let Some(w) = finished_on(line, "sink:model/out")
        {
            match signal {
                "KILL" => procs.kill(w),
                s => common::signal(procs.pid(w).expect("worker pid"), s),
            }
            stopped = Some(w.to_string());
        }
    });
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stopped.is_some(), "no model was written:\n{log}");
    assert_same_as_in_process(d.path(), &out);
    assert_eq!(temporaries_in_out(d.path()), Vec::<String>::new(), "{log}");
}

#[test]
fn a_worker_killed_after_staging_an_output_leaves_no_temporary_after_the_run() {
    a_worker_stopped_after_staging_an_output_leaves_no_temporary("KILL");
}

#[test]
fn a_worker_sent_sigterm_after_staging_an_output_leaves_no_temporary_after_the_run() {
    a_worker_stopped_after_staging_an_output_leaves_no_temporary("TERM");
}

/// The journal a worker process keeps of its temporary files (see
/// `data::write::journal_in`), found by its process id.
fn journal_of(pid: u32) -> Option<std::path::PathBuf> {
    let dir = std::env::temp_dir().join("dagml-worker-journals");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(&format!("-{pid}.journal")).then(|| e.path())
        })
}

#[test]
fn a_worker_killed_with_its_client_has_its_staged_files_removed_by_the_next_worker() {
    // Worker and client killed together just after the worker staged the
    // model: nobody is left to put it in place or remove it. The next worker
    // started on this machine removes it (from the killed one's journal)
    // before it serves, and the next run leaves no temporary either.
    let mut procs = Procs::default();
    let sched = procs.cluster(2, None);
    let d = workdir();
    let mut killed: Option<(String, Vec<String>)> = None;
    procs.run_watching(d.path(), &sched, |procs, line, client| {
        if killed.is_none()
            && let Some(w) = finished_on(line, "sink:model/out")
        {
            let pid = procs.pid(w).expect("worker pid");
            procs.kill(w);
            common::signal(client, "KILL");
            let journal = journal_of(pid).expect("the worker's journal");
            let listed = std::fs::read_to_string(journal).unwrap_or_default();
            killed = Some((w.to_string(), listed.lines().map(str::to_string).collect()));
        }
    });
    let (worker, listed) = killed.expect("no model was written");
    let out_dir = d.path().canonicalize().expect("dir").join("out");
    let mine: Vec<&String> = listed
        .iter()
        .filter(|l| Path::new(l.as_str()).starts_with(&out_dir))
        .collect();
    let staged: Vec<&&String> = mine
        .iter()
        .filter(|l| Path::new(l.as_str()).exists())
        .collect();
    assert!(
        staged.iter().any(|l| l.contains(".forest.model.dagml-")),
        "{worker} left no staged model: {mine:?} in {:?}",
        temporaries_in_out(d.path())
    );
    procs.serve(
        "w9",
        &[
            "worker",
            &sched,
            "--nthreads",
            "1",
            "--name",
            "w9",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    for l in &mine {
        assert!(!Path::new(l.as_str()).exists(), "{l} is still there");
    }
    let out = dagml_run(d.path(), &["--scheduler", &sched], None);
    assert_same_as_in_process(d.path(), &out);
    assert_eq!(temporaries_in_out(d.path()), Vec::<String>::new());
}

#[test]
fn a_worker_refuses_a_run_whose_partition_fits_neither_its_memory_nor_its_disk() {
    // 10^12 rows in one partition (~72 TB): more than this machine's memory
    // and disk together. The worker's --memory-limit (2GB here) is only where it
    // starts to spill: it is not what refuses.
    let mut procs = Procs::default();
    let sched = procs.cluster(1, None);
    let d = tempfile::tempdir().expect("tempdir");
    one_big_partition(d.path(), "1_000_000_000_000");
    // Only small outputs: the client's disk check passes, the worker decides.
    let text = std::fs::read_to_string(d.path().join("pipeline.toml")).expect("read");
    let (head, _) = text
        .split_once("[outputs.predictions]")
        .expect("the fixture's predictions output");
    std::fs::write(d.path().join("pipeline.toml"), head).expect("write");
    let out = dagml_run(d.path(), &["--scheduler", &sched], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("worker `w0` refused the run"), "{err}");
    assert!(
        err.contains("of memory available +") && err.contains("free under its data root"),
        "{err}"
    );
    assert!(err.contains("nothing was run"), "{err}");
}

/// gauss_linreg at a small size: its evaluation reads each partition again
/// after the fit (`RereadScore`), on whichever worker scores it.
fn small_gauss(dir: &Path) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/gauss_linreg.toml"
    ))
    .expect("read gauss_linreg.toml");
    let text = text
        .replace("rows = 100_000_000", "rows = 60_000")
        .replace("partitions = 100", "partitions = 6");
    assert!(text.contains("rows = 60_000") && text.contains("partitions = 6"));
    std::fs::write(dir.join("pipeline.toml"), text).expect("write pipeline");
}

#[test]
fn a_source_read_again_to_be_scored_gives_the_in_process_metrics_on_every_kind_of_run() {
    let files = [
        "out/gauss_linreg/metrics.json",
        "out/gauss_linreg/linreg.model",
    ];
    let bytes = |d: &Path| -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(d.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect()
    };
    let reference = tempfile::tempdir().expect("tempdir");
    small_gauss(reference.path());
    let out = dagml_run(reference.path(), &["--in-process"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = bytes(reference.path());
    let want_stdout = out.stdout;
    let mut procs = Procs::default();
    let sched = procs.cluster(2, None);
    let runs: [&[&str]; 3] = [
        &["--workers", "2"],
        &["--workers", "1"],
        &["--scheduler", &sched],
    ];
    for extra in runs {
        let d = tempfile::tempdir().expect("tempdir");
        small_gauss(d.path());
        let out = dagml_run(d.path(), extra, None);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&want_stdout),
            "{extra:?}"
        );
        assert!(bytes(d.path()) == want, "{extra:?}: the outputs differ");
    }
    drop(procs);
}
