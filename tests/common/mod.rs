//! What the integration tests share: `Procs`, a guard that owns every process
//! a test starts and kills (SIGKILL) and reaps them on drop, pass or fail;
//! starting a `dagml scheduler` / `dagml worker` (on this host or inside a
//! network namespace) with a bounded wait for its address; the forest
//! fixture with its in-process bytes, which every cluster run must give;
//! running `dagml` in a folder (`dagml_in`, `ran_in_tempdir`); reading a
//! server's log and signalling it; network hosts (`netns`).

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod http;
pub mod netns;
pub mod python;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The pipeline the cluster tests run: a small forest, its metrics and
/// predictions.
pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/cluster_forest.toml"
);
/// The files it writes.
pub const OUTPUTS: [&str; 3] = [
    "out/forest.model",
    "out/metrics.json",
    "out/predictions.parquet",
];

/// A run's stdout and its output files (name, bytes).
pub type RunBytes = (Vec<u8>, Vec<(String, Vec<u8>)>);

/// A fresh folder holding the fixture as `pipeline.toml`.
pub fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::copy(FIXTURE, d.path().join("pipeline.toml")).expect("copy fixture");
    d
}

/// The fixture's output files in `dir`.
pub fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    OUTPUTS
        .iter()
        .map(|p| {
            let bytes = std::fs::read(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
            (p.to_string(), bytes)
        })
        .collect()
}

/// The in-process run's stdout and files (computed once per test binary).
pub fn reference() -> &'static RunBytes {
    static REF: std::sync::OnceLock<RunBytes> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let d = workdir();
        let out = dagml(None)
            .current_dir(d.path())
            .args(["run", "pipeline.toml", "--quiet", "--in-process"])
            .stdin(Stdio::null())
            .output()
            .expect("run dagml");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.stdout, outputs(d.path()))
    })
}

/// A cluster run of the fixture in `dir` succeeded with the in-process run's
/// stdout and files, byte for byte.
pub fn assert_same_as_in_process(dir: &Path, out: &std::process::Output) {
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

/// `dagml ARGS` run to its end in `cwd`, with the test's environment as it
/// is (unlike [`dagml`], nothing is removed).
pub fn dagml_in(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dagml"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the dagml binary runs")
}

/// A finished command's status, stdout and stderr, for a failure message.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh folder holding `files` (name, contents) in which `dagml ARGS` ran
/// and succeeded.
pub fn ran_in_tempdir(files: &[(&str, &[u8])], args: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let out = dagml_in(args, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    dir
}

/// A server's limit to print its address.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// The `dagml` binary as a command, inside network namespace `netns` when
/// given (`ip netns exec NS dagml ...`: `ip` execs it, so the child is
/// `dagml` itself), with none of the test's own DAGML_* settings.
pub fn dagml(netns: Option<&str>) -> Command {
    let bin = env!("CARGO_BIN_EXE_dagml");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    for var in TEST_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// The test's own DAGML_* settings, which no `dagml` it starts may inherit.
pub const TEST_ENV: [&str; 6] = [
    "DAGML_TOKEN",
    "DAGML_TLS_CERT",
    "DAGML_TLS_KEY",
    "DAGML_TLS_CA",
    "DAGML_EMBEDDED_FAULT",
    "DAGML_EMBEDDED_HOLD",
];

/// Kills (SIGKILL) and reaps every child on drop.
#[derive(Default)]
pub struct Procs(pub Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    /// Start a `dagml` server command and return the address from its first line
    /// (`... listening on HOST:PORT`), waiting at most `START_LIMIT`. The
    /// server gets `env` and none of the test's own DAGML_TOKEN / DAGML_TLS_*.
    pub fn serve(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        self.serve_logging(name, args, env, None)
    }

    /// [`Procs::serve`], with the server's stderr going to `log` when given.
    pub fn serve_logging(
        &mut self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> String {
        let mut cmd = dagml(None);
        cmd.args(args).envs(env.iter().copied());
        self.serve_command(name, cmd, log)
    }

    /// Start `cmd` (a `dagml` server, see [`dagml`]) and return the address
    /// from its first line, waiting at most `START_LIMIT`; its stderr goes to
    /// `log` when given.
    pub fn serve_command(&mut self, name: &str, mut cmd: Command, log: Option<&Path>) -> String {
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("create log")),
            None => Stdio::null(),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("start dagml");
        let stdout = child.stdout.take().expect("stdout");
        self.0.push((name.to_string(), child));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(START_LIMIT)
            .unwrap_or_else(|_| panic!("{name} printed no address in {START_LIMIT:?}"));
        line.trim()
            .rsplit_once("listening on ")
            .map(|(_, a)| a.to_string())
            .unwrap_or_else(|| panic!("{name} did not start: {line:?}"))
    }

    /// The process id of the process started as `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, c)| c.id())
    }

    /// Kill (SIGKILL) and reap the process started as `name`.
    pub fn kill(&mut self, name: &str) {
        if let Some((_, c)) = self.0.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Reading a server's log, signalling it.

/// The worker a `started TASK on WORKER (attempt N)` line names, if the task
/// starts with `prefix`.
pub fn started_on<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = line.strip_prefix("started ")?;
    let (task, on) = rest.split_once(" on ")?;
    task.starts_with(prefix)
        .then(|| on.split_whitespace().next())
        .flatten()
}

/// Send `signal` (`STOP`, `CONT`) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid} failed");
}

/// How many lines of the file at `log` contain `needle`.
pub fn count_in(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Wait (at most `bound`) until `log` holds `n` lines with `needle`.
pub fn wait_for_lines(log: &Path, needle: &str, n: usize, bound: Duration) {
    let t0 = Instant::now();
    while count_in(log, needle) < n {
        assert!(
            t0.elapsed() < bound,
            "`{needle}` did not appear {n} times in {bound:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
