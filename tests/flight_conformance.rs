//! A worker's Flight service against a plain pyarrow Flight client: a scheduler
//! and a worker as separate processes on 127.0.0.1, and
//! tests/flight_conformance.py run against the worker (do_put, list_flights,
//! do_get, clean errors for what is not implemented, the bearer token).
//!
//! Python: `DAGML_TEST_PYTHON` if set (it must import pyarrow.flight); otherwise
//! a virtual environment at `target/conformance-venv` made once with
//! `python3 -m venv` and `pip install pyarrow` (when the venv module is missing,
//! `pip install --target target/conformance-pyarrow` instead). Without python3
//! the tests fail, saying so.
//!
//! Every process a test starts is owned by a guard that kills it on drop, so
//! they are stopped whether the test passes or panics; every wait has a limit.

mod common;

use common::Procs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flight_conformance.py");
/// The conformance script's limit.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);
/// Limits to make the venv and to install pyarrow into it.
const VENV_LIMIT: Duration = Duration::from_secs(300);
const PIP_LIMIT: Duration = Duration::from_secs(900);
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

/// What a bounded command did.
struct Ran {
    /// None: killed at the limit.
    status: Option<ExitStatus>,
    output: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        let how = match self.status {
            Some(s) => format!("exited with {s}"),
            None => "was killed at its time limit".to_string(),
        };
        format!("{how}; its output:\n{}", self.output)
    }
}

/// Run `cmd` (stdout and stderr captured together, stdin closed), killing it
/// after `limit`. Never leaves the process running.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Ran, String> {
    let mut procs = Procs::default();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let readers = [
        read_all(child.stdout.take().expect("stdout")),
        read_all(child.stderr.take().expect("stderr")),
    ];
    procs.0.push(("command".into(), child));
    let deadline = Instant::now() + limit;
    let status = loop {
        let child = &mut procs.0[0].1;
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => break None,
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    drop(procs); // kills it if still running, so the pipes close
    let mut output = String::new();
    for r in readers {
        output.push_str(&r.join().unwrap_or_default());
    }
    Ok(Ran { status, output })
}

fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A Python that imports pyarrow.flight, with the `PYTHONPATH` it needs.
#[derive(Clone, Debug)]
struct Python {
    exe: PathBuf,
    path: Option<PathBuf>,
}

impl Python {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        if let Some(p) = &self.path {
            cmd.env("PYTHONPATH", p);
        }
        cmd
    }

    /// Imports pyarrow.flight (within a minute)?
    fn works(&self) -> bool {
        let mut cmd = self.command();
        cmd.args(["-c", "import pyarrow.flight"]);
        run_bounded(&mut cmd, Duration::from_secs(60)).is_ok_and(|r| r.ok())
    }
}

/// Cargo's target directory (`target/` for the default layout): the parent of
/// the folder holding the `dagml` binary.
fn target_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_dagml"));
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// The Python for these tests, found or set up once per test binary.
fn python() -> Python {
    static PY: OnceLock<Result<Python, String>> = OnceLock::new();
    match PY.get_or_init(find_python) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn find_python() -> Result<Python, String> {
    if let Some(exe) = std::env::var_os(PYTHON_ENV).filter(|v| !v.is_empty()) {
        let py = Python {
            exe: exe.into(),
            path: None,
        };
        return if py.works() {
            Ok(py)
        } else {
            Err(format!(
                "{PYTHON_ENV}={} cannot import pyarrow.flight (unset it to let the \
                 test make a venv under target/)",
                py.exe.display()
            ))
        };
    }
    let target = target_dir();
    let venv = Python {
        exe: venv_python(&target.join("conformance-venv")),
        path: None,
    };
    let lib = target.join("conformance-pyarrow");
    let base = if cfg!(windows) { "python" } else { "python3" };
    let with_lib = Python {
        exe: base.into(),
        path: Some(lib.clone()),
    };
    if venv.exe.exists() && venv.works() {
        return Ok(venv);
    }
    if lib.exists() && with_lib.works() {
        return Ok(with_lib);
    }
    let version = Command::new(base)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "the Flight conformance test needs `{base}` (Python 3 with pip) on PATH, \
                 or {PYTHON_ENV} naming a Python with pyarrow: cannot run `{base}`: {e}"
            )
        })?;
    if !version.status.success() {
        return Err(format!(
            "`{base} --version` failed: {}",
            String::from_utf8_lossy(&version.stderr)
        ));
    }
    eprintln!(
        "flight_conformance: installing pyarrow under {}",
        target.display()
    );
    let made = make_venv(base, &target);
    match made {
        Ok(()) if venv.works() => Ok(venv),
        Ok(()) => Err(format!(
            "the venv at {} cannot import pyarrow.flight",
            target.join("conformance-venv").display()
        )),
        Err(venv_err) => match install_lib(base, &target) {
            Ok(()) if with_lib.works() => Ok(with_lib),
            Ok(()) => Err(format!(
                "{} cannot import pyarrow.flight from {}",
                base,
                lib.display()
            )),
            Err(lib_err) => Err(format!(
                "cannot set up pyarrow for the Flight conformance test (or set \
                 {PYTHON_ENV} to a Python with pyarrow):\n* venv: {venv_err}\n* pip \
                 --target: {lib_err}"
            )),
        },
    }
}

/// Build into `<target>/<name>.tmp-<pid>`, then rename to `<target>/<name>`
/// (so a half-made one is never used; if another process finished first and
/// its copy works, keep that one).
fn build_then_rename(
    target: &Path,
    name: &str,
    build: impl FnOnce(&Path) -> Result<(), String>,
    works: impl Fn() -> bool,
) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    let tmp = target.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let built = build(&tmp);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dest = target.join(name);
    if works() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&dest);
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !works() {
            return Err(format!(
                "cannot move {} to {}: {e}",
                tmp.display(),
                dest.display()
            ));
        }
    }
    Ok(())
}

fn checked(cmd: &mut Command, limit: Duration) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let ran = run_bounded(cmd, limit)?;
    if ran.ok() {
        Ok(())
    } else {
        Err(format!("{what} {}", ran.describe()))
    }
}

fn make_venv(base: &str, target: &Path) -> Result<(), String> {
    let dest = venv_python(&target.join("conformance-venv"));
    let works = || {
        Python {
            exe: dest.clone(),
            path: None,
        }
        .works()
    };
    build_then_rename(
        target,
        "conformance-venv",
        |tmp| {
            checked(
                Command::new(base).arg("-m").arg("venv").arg(tmp),
                VENV_LIMIT,
            )?;
            checked(
                Command::new(venv_python(tmp)).args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "pyarrow",
                ]),
                PIP_LIMIT,
            )
        },
        works,
    )
}

fn install_lib(base: &str, target: &Path) -> Result<(), String> {
    let lib = target.join("conformance-pyarrow");
    let works = || {
        lib.exists()
            && Python {
                exe: base.into(),
                path: Some(lib.clone()),
            }
            .works()
    };
    build_then_rename(
        target,
        "conformance-pyarrow",
        |tmp| {
            checked(
                Command::new(base)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--target",
                    ])
                    .arg(tmp)
                    .arg("pyarrow"),
                PIP_LIMIT,
            )
        },
        works,
    )
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
