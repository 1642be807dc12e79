//! The cluster survives peers that stop answering without closing anything: a
//! worker whose link is cut (a scheduler and two workers on three network
//! hosts: network namespaces joined by a bridge, made and removed here), a
//! SIGSTOPped worker, a SIGSTOPped scheduler, and an embedded worker silenced
//! by `DAGML_EMBEDDED_FAULT=partition-worker`. Each run must end within
//! `RUN_BOUND`, with the in-process run's bytes (or, for the scheduler, a
//! message naming it); the cut comes at several moments of a run.
//!
//! Every process started is owned by `common::Procs` (SIGKILLed on drop), the
//! namespaces and the bridge by `Hosts` (removed on drop), pass or fail. The
//! namespace tests need root and `ip netns`; without them they print why and
//! pass without running.

mod common;

use common::netns::Hosts;
use common::{
    Procs, assert_same_as_in_process, dagml, reference, signal, started_on, wait_for_lines, workdir,
};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a run may take with a peer gone silent: detection is bounded by
/// HEARTBEAT_TIMEOUT and the keepalive (5 s each), the rest is recomputing
/// on a loaded debug build. The runs hung for 10 minutes.
const RUN_BOUND: Duration = Duration::from_secs(90);
/// Longest a silenced worker that speaks again may take to register again.
const REREGISTER_BOUND: Duration = Duration::from_secs(30);
/// Longest the scheduler may take to declare a cut-off worker lost: its
/// heartbeat timeout (5 s) and a watchdog tick, with room for a loaded host.
const LOSS_BOUND: Duration = Duration::from_secs(15);

/// `dagml run pipeline.toml --quiet EXTRA` in `dir` (inside `netns` if given).
fn run_cmd(netns: Option<&str>, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = dagml(netns);
    cmd.current_dir(dir)
        .args(["run", "pipeline.toml", "--quiet"])
        .args(extra)
        .stdin(Stdio::null());
    cmd
}

/// Start `run` (a `dagml run` with `--events`) owned by `procs`; `on_line`
/// sees each stderr line as it comes and may act on the cluster. Returns the
/// client's output and how long it ran; panics (the guard then kills
/// everything) if it runs past `RUN_BOUND`.
fn watch(
    procs: &mut Procs,
    mut run: Command,
    mut on_line: impl FnMut(&mut Procs, &str),
) -> (Output, Duration) {
    run.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = run.spawn().expect("start run");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    procs.0.push(("client".into(), child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut BufReader::new(stdout), &mut v);
        v
    });
    let mut log = String::new();
    loop {
        let left = RUN_BOUND.saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                on_line(procs, &line);
                log.push_str(&line);
                log.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the run did not end within {RUN_BOUND:?}:\n{log}")
            }
        }
    }
    let pos = procs
        .0
        .iter()
        .position(|(n, _)| n == "client")
        .expect("client");
    let (_, mut client) = procs.0.remove(pos);
    let status = client.wait().expect("wait");
    let elapsed = t0.elapsed();
    let stdout = out_reader.join().unwrap_or_default();
    (
        Output {
            status,
            stdout,
            stderr: log.into_bytes(),
        },
        elapsed,
    )
}

// ---------------------------------------------------------------------------
// Three network hosts.

/// A bridge and three network namespaces (the scheduler's host and two
/// workers' hosts), each joined to the bridge by a veth pair, with addresses
/// 10.213.N.1-3/24 of their own; all removed on drop.
fn three_hosts() -> Result<Hosts, String> {
    let k = NEXT_HOSTS.fetch_add(1, Ordering::SeqCst);
    let tag = format!("{}{k}", std::process::id() % 10_000);
    let subnet = (std::process::id() * 7 + k * 31) % 250 + 1;
    Hosts::new("dg", &tag, &format!("10.213.{subnet}"), &["s", "a", "b"])
}

static NEXT_HOSTS: AtomicU32 = AtomicU32::new(0);

/// A scheduler on host 0 and workers w0, w1 on hosts 1 and 2, the
/// scheduler's stderr in `log`. Returns the scheduler's address.
fn cluster_on(procs: &mut Procs, hosts: &Hosts, log: &Path) -> String {
    let mut s = dagml(Some(hosts.ns(0)));
    s.args(["scheduler", "--listen", &format!("{}:7070", hosts.addr(0))]);
    let sched = procs.serve_command("scheduler", s, Some(log));
    for i in 0..2 {
        let name = format!("w{i}");
        let mut w = dagml(Some(hosts.ns(i + 1)));
        w.args([
            "worker",
            &sched,
            "--nthreads",
            "1",
            "--name",
            &name,
            "--listen",
            &format!("{}:0", hosts.addr(i + 1)),
        ]);
        procs.serve_command(&name, w, None);
    }
    wait_for_lines(log, "registered at", 2, REREGISTER_BOUND);
    sched
}

/// On three hosts, cut the link of the worker that starts a task whose id
/// begins with `at`; the run completes with the in-process bytes within
/// `RUN_BOUND`. With `heal`, the link comes back after the run and the
/// worker registers again.
fn a_worker_cut_off_at(at: &str, heal: bool) {
    let hosts = match three_hosts() {
        Ok(h) => h,
        Err(why) => {
            println!("skipped: cannot make network namespaces here ({why})");
            return;
        }
    };
    let _ = reference();
    let mut procs = Procs::default();
    let d = workdir();
    let log = d.path().join("scheduler.log");
    let sched = cluster_on(&mut procs, &hosts, &log);
    let mut cut: Option<String> = None;
    let run = run_cmd(
        Some(hosts.ns(0)),
        d.path(),
        &["--events", "--scheduler", &sched],
    );
    let (out, took) = watch(&mut procs, run, |_, line| {
        if cut.is_none()
            && let Some(w) = started_on(line, at)
        {
            let i: usize = w.trim_start_matches('w').parse().expect("worker index");
            hosts.link(i + 1, false);
            cut = Some(w.to_string());
        }
    });
    let cut = cut.unwrap_or_else(|| {
        panic!(
            "no task `{at}` started:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!("cut {cut} at `{at}`: the run took {took:?}");
    assert_same_as_in_process(d.path(), &out);
    // A worker cut off after its last answer holds nothing the run still
    // needs, so the run may end before the watchdog notices; the watchdog
    // must still declare it lost within its bound.
    wait_for_lines(&log, &format!("worker {cut} ("), 1, LOSS_BOUND);
    if heal {
        let i: usize = cut.trim_start_matches('w').parse().expect("worker index");
        hosts.link(i + 1, true);
        wait_for_lines(
            &log,
            &format!("worker {cut} registered at"),
            2,
            REREGISTER_BOUND,
        );
    }
    drop(procs);
    drop(hosts);
}

#[test]
fn a_worker_cut_off_at_the_first_tasks_does_not_change_the_model() {
    a_worker_cut_off_at("source:blobs/p1", false);
    a_worker_cut_off_at("source:blobs/p3", false);
    a_worker_cut_off_at("split:holdout", false);
}

#[test]
fn a_worker_cut_off_mid_fit_does_not_change_the_model_and_registers_again_once_back() {
    a_worker_cut_off_at("fit:forest/g2", true);
    a_worker_cut_off_at("fit:forest/g4", false);
    a_worker_cut_off_at("fit:forest/g0", true);
    a_worker_cut_off_at("fit:forest/out", false);
}

#[test]
fn a_worker_cut_off_near_the_end_does_not_change_the_model() {
    a_worker_cut_off_at("evaluate:scores", false);
    a_worker_cut_off_at("sink:", false);
    a_worker_cut_off_at("sink:metrics", false);
}

// ---------------------------------------------------------------------------
// Stopped processes on loopback.

/// A scheduler and two workers on 127.0.0.1, the scheduler's stderr in `log`.
fn loopback_cluster(procs: &mut Procs, log: &Path) -> String {
    let sched = procs.serve_logging(
        "scheduler",
        &["scheduler", "--listen", "127.0.0.1:0"],
        &[],
        Some(log),
    );
    for i in 0..2 {
        let name = format!("w{i}");
        procs.serve(
            &name,
            &[
                "worker",
                &sched,
                "--nthreads",
                "1",
                "--name",
                &name,
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        );
    }
    wait_for_lines(log, "registered at", 2, REREGISTER_BOUND);
    sched
}

/// SIGSTOP the worker that starts a task beginning with `at` (alive, silent);
/// the run completes with the same bytes; SIGCONT it and it registers again.
fn a_worker_stopped_at(at: &str) {
    let _ = reference();
    let mut procs = Procs::default();
    let d = workdir();
    let log = d.path().join("scheduler.log");
    let sched = loopback_cluster(&mut procs, &log);
    let mut stopped: Option<(String, u32)> = None;
    let run = run_cmd(None, d.path(), &["--events", "--scheduler", &sched]);
    let (out, took) = watch(&mut procs, run, |procs, line| {
        if stopped.is_none()
            && let Some(w) = started_on(line, at)
        {
            let pid = procs.pid(w).expect("worker pid");
            signal(pid, "STOP");
            stopped = Some((w.to_string(), pid));
        }
    });
    let (w, pid) = stopped.unwrap_or_else(|| {
        panic!(
            "no task `{at}` started:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!("stopped {w} at `{at}`: the run took {took:?}");
    assert_same_as_in_process(d.path(), &out);
    signal(pid, "CONT");
    wait_for_lines(
        &log,
        &format!("worker {w} registered at"),
        2,
        REREGISTER_BOUND,
    );
    drop(procs);
}

#[test]
fn a_stopped_worker_does_not_change_the_model_and_registers_again_once_continued() {
    a_worker_stopped_at("fit:forest/g1");
    a_worker_stopped_at("evaluate:scores");
}

#[test]
fn a_stopped_scheduler_fails_the_client_in_bounded_time_naming_it() {
    let mut procs = Procs::default();
    let d = workdir();
    let log = d.path().join("scheduler.log");
    let sched = loopback_cluster(&mut procs, &log);
    let mut stopped = false;
    let run = run_cmd(None, d.path(), &["--events", "--scheduler", &sched]);
    let (out, took) = watch(&mut procs, run, |procs, line| {
        if !stopped && line.starts_with("finished ") {
            signal(procs.pid("scheduler").expect("scheduler pid"), "STOP");
            stopped = true;
        }
    });
    let err = String::from_utf8_lossy(&out.stderr);
    println!(
        "the client gave up after {took:?}: {}",
        err.lines().last().unwrap_or("")
    );
    assert!(stopped, "no task finished:\n{err}");
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("the scheduler at {sched} stopped answering")),
        "{err}"
    );
    // The keepalive gives up within 5 s of silence; allow for a loaded host.
    assert!(took < Duration::from_secs(30), "{took:?}:\n{err}");
    drop(procs);
}

// ---------------------------------------------------------------------------
// The embedded cluster.

/// `DAGML_EMBEDDED_FAULT=partition-worker:any:at-task:AT[:heal-after:S]` on
/// three embedded workers: the silenced worker is declared lost, the run
/// completes with the in-process bytes within `RUN_BOUND`. Healing after S
/// seconds (past the 5 s heartbeat timeout) it may register again within
/// the run and take tasks.
fn an_embedded_worker_silenced_at(at: &str, heal_after: Option<u32>) {
    let _ = reference();
    let mut procs = Procs::default();
    let d = workdir();
    let mut fault = format!("partition-worker:any:at-task:{at}");
    if let Some(s) = heal_after {
        fault.push_str(&format!(":heal-after:{s}"));
    }
    let mut run = run_cmd(None, d.path(), &["--workers", "3", "--events"]);
    run.env("DAGML_EMBEDDED_FAULT", &fault);
    let mut lost: Option<String> = None;
    let (out, took) = watch(&mut procs, run, |_, line| {
        let gone = line
            .strip_prefix("worker ")
            .and_then(|l| l.split_once(" lost: "));
        if let (None, Some((w, _))) = (&lost, gone) {
            lost = Some(w.to_string());
        }
    });
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("{fault}: the run took {took:?}");
    assert_same_as_in_process(d.path(), &out);
    let lost = lost.unwrap_or_else(|| panic!("no worker was declared lost:\n{log}"));
    // It had been handed the task; nothing finished on it afterwards (until
    // it spoke again and registered anew, when it heals within the run).
    let (before, after) = log
        .split_once(&format!("worker {lost} lost"))
        .expect("the loss");
    let back = format!("worker {lost}: the scheduler declared this worker lost");
    let after = after.split(back.as_str()).next().unwrap_or("");
    assert!(
        before
            .lines()
            .any(|l| started_on(l, at) == Some(lost.as_str())),
        "{log}"
    );
    assert!(
        !after
            .lines()
            .any(|l| l.starts_with("finished ") && l.ends_with(&format!(" on {lost}"))),
        "{log}"
    );
}

#[test]
fn an_embedded_worker_silenced_mid_fit_or_near_the_end_does_not_change_the_model() {
    an_embedded_worker_silenced_at("fit:forest/g1", None);
    an_embedded_worker_silenced_at("evaluate:scores", None);
}

#[test]
fn an_embedded_worker_silenced_then_healed_does_not_change_the_model() {
    an_embedded_worker_silenced_at("source:blobs/p0", Some(7));
}
