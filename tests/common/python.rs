//! A Python with the packages a conformance test needs: `python3 -m venv` at
//! `target/<venv>` made once with `pip install <packages>` (when the venv
//! module is missing, `pip install --target target/<venv>-lib` instead), or
//! the interpreter an environment variable names. Every command is bounded in
//! time and never left running.

use super::Procs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Limits to make a venv and to install packages into it.
const VENV_LIMIT: Duration = Duration::from_secs(300);
const PIP_LIMIT: Duration = Duration::from_secs(900);

/// What a test needs of Python.
pub struct Need {
    /// The venv's folder name under `target/`.
    pub venv: &'static str,
    /// What `pip install` gets.
    pub packages: &'static [&'static str],
    /// A statement that works only when they are installed.
    pub import: &'static str,
    /// An environment variable naming a ready Python instead.
    pub env: &'static str,
}

/// What a bounded command did.
pub struct Ran {
    /// None: killed at the limit.
    pub status: Option<ExitStatus>,
    pub output: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn describe(&self) -> String {
        let how = match self.status {
            Some(s) => format!("exited with {s}"),
            None => "was killed at its time limit".to_string(),
        };
        format!("{how}; its output:\n{}", self.output)
    }
}

/// Run `cmd` (stdout and stderr captured together, stdin closed), killing it
/// after `limit`. Never leaves the process running.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Ran, String> {
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

/// A Python that has the packages, with the `PYTHONPATH` it needs.
#[derive(Clone, Debug)]
pub struct Python {
    pub exe: PathBuf,
    pub path: Option<PathBuf>,
    import: &'static str,
}

impl Python {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        if let Some(p) = &self.path {
            cmd.env("PYTHONPATH", p);
        }
        cmd
    }

    /// Runs the import (within a minute)?
    fn works(&self) -> bool {
        let mut cmd = self.command();
        cmd.args(["-c", self.import]);
        run_bounded(&mut cmd, Duration::from_secs(60)).is_ok_and(|r| r.ok())
    }
}

/// Cargo's target directory (`target/` for the default layout): the parent of
/// the folder holding the `dagml` binary.
pub fn target_dir() -> PathBuf {
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

/// Find or set up the Python `need` describes.
pub fn find(need: &Need) -> Result<Python, String> {
    let packages = need.packages.join(" ");
    if let Some(exe) = std::env::var_os(need.env).filter(|v| !v.is_empty()) {
        let py = Python {
            exe: exe.into(),
            path: None,
            import: need.import,
        };
        return if py.works() {
            Ok(py)
        } else {
            Err(format!(
                "{}={} cannot run `{}` (unset it to let the test make a venv under target/)",
                need.env,
                py.exe.display(),
                need.import
            ))
        };
    }
    let target = target_dir();
    let venv = Python {
        exe: venv_python(&target.join(need.venv)),
        path: None,
        import: need.import,
    };
    let lib_name = format!("{}-lib", need.venv);
    let lib = target.join(&lib_name);
    let base = if cfg!(windows) { "python" } else { "python3" };
    let with_lib = Python {
        exe: base.into(),
        path: Some(lib.clone()),
        import: need.import,
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
                "this test needs `{base}` (Python 3 with pip) on PATH, or {} naming a \
                 Python with {packages}: cannot run `{base}`: {e}",
                need.env
            )
        })?;
    if !version.status.success() {
        return Err(format!(
            "`{base} --version` failed: {}",
            String::from_utf8_lossy(&version.stderr)
        ));
    }
    eprintln!("installing {packages} under {}", target.display());
    let made = build_then_rename(
        &target,
        need.venv,
        |tmp| {
            checked(
                Command::new(base).arg("-m").arg("venv").arg(tmp),
                VENV_LIMIT,
            )?;
            checked(
                Command::new(venv_python(tmp))
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(need.packages),
                PIP_LIMIT,
            )
        },
        || venv.exe.exists() && venv.works(),
    );
    match made {
        Ok(()) if venv.works() => Ok(venv),
        Ok(()) => Err(format!(
            "the venv at {} cannot run `{}`",
            target.join(need.venv).display(),
            need.import
        )),
        Err(venv_err) => {
            let lib_made = build_then_rename(
                &target,
                &lib_name,
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
                            .args(need.packages),
                        PIP_LIMIT,
                    )
                },
                || lib.exists() && with_lib.works(),
            );
            match lib_made {
                Ok(()) if with_lib.works() => Ok(with_lib),
                Ok(()) => Err(format!(
                    "{base} cannot run `{}` with {}",
                    need.import,
                    lib.display()
                )),
                Err(lib_err) => Err(format!(
                    "cannot set up {packages} for this test (or set {} to a Python \
                     that has them):\n* venv: {venv_err}\n* pip --target: {lib_err}",
                    need.env
                )),
            }
        }
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
