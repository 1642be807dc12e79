//! A worker's Flight service against a plain pyarrow Flight client: a scheduler
//! and a worker as separate processes on 127.0.0.1, and
//! tests/flight_conformance.py run against the worker (do_put, list_flights,
//! do_get, clean errors for what is not implemented, the bearer token).
//!
//! Python: `DAGML_TEST_PYTHON` if set (it must import pyarrow.flight); otherwise
//! a virtual environment at `target/conformance-venv` made once with
//! `python3 -m venv` and `pip install pyarrow` (when the venv module is missing,
//! `pip install --target target/conformance-venv-lib` instead). Without python3
//! the tests fail, saying so.
//!
//! Every process a test starts is owned by a guard that kills it on drop, so
//! they are stopped whether the test passes or panics; every wait has a limit.

mod common;

use common::Procs;
use common::python::{self, Need, Python, run_bounded};
use std::sync::OnceLock;
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flight_conformance.py");
/// The conformance script's limit.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);
/// Environment variable naming a Python that imports pyarrow.flight.
const PYTHON_ENV: &str = "DAGML_TEST_PYTHON";

impl Procs {
    /// A scheduler and one worker (with `extra` arguments); returns the
    /// worker's address.
    fn scheduler_and_worker(&mut self, token: Option<&str>, extra: &[&str]) -> String {
        // Plain gRPC (the script dials grpc://), with the token when given.
        let env: Vec<(&str, &str)> = token.map(|t| ("DAGML_TOKEN", t)).into_iter().collect();
        let sched = self.serve("scheduler", &["scheduler", "--listen", "127.0.0.1:0"], &env);
        let mut args = vec![
            "worker",
            &sched,
            "--nthreads",
            "1",
            "--name",
            "conformance",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        self.serve("worker", &args, &env)
    }
}

/// The Python for these tests, found or set up once per test binary.
fn python() -> Python {
    static PY: OnceLock<Result<Python, String>> = OnceLock::new();
    let need = Need {
        venv: "conformance-venv",
        packages: &["pyarrow"],
        import: "import pyarrow.flight",
        env: PYTHON_ENV,
    };
    match PY.get_or_init(|| python::find(&need)) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Start a scheduler and a worker (with `token` if given, and `extra` worker
/// arguments), run the script against the worker, and fail with its output
/// unless every check passed.
fn conformance(token: Option<&str>, extra: &[&str]) {
    let py = python();
    let mut procs = Procs::default();
    let worker = procs.scheduler_and_worker(token, extra);
    let mut cmd = py.command();
    cmd.arg(SCRIPT).arg(&worker).env_remove("DAGML_TOKEN");
    if let Some(t) = token {
        cmd.arg(t);
    }
    let ran = run_bounded(&mut cmd, SCRIPT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    drop(procs);
    assert!(
        ran.ok(),
        "the pyarrow conformance script {}",
        ran.describe()
    );
    assert!(ran.output.contains("all checks passed"), "{}", ran.output);
    eprintln!("{}", ran.output);
}

#[test]
fn a_plain_pyarrow_client_puts_lists_and_reads_partitions() {
    conformance(None, &[]);
}

#[test]
fn a_plain_pyarrow_client_needs_the_token_and_works_with_it() {
    conformance(Some("conformance-s3cret"), &[]);
}

#[test]
fn partitions_spilled_to_disk_read_back_the_same() {
    // A 1-byte memory limit: every partition put is written to an Arrow IPC
    // file under the data root, and do_get reads it back from there.
    let root = tempfile::tempdir().expect("tempdir");
    let root_arg = root.path().to_str().expect("UTF-8 temp path");
    conformance(None, &["--memory-limit", "1", "--data-root", root_arg]);
    let spilled = std::fs::read_dir(root.path().join("spill"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(spilled >= 2, "{spilled} spill files under {root_arg}/spill");
}
