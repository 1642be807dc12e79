//! The live dashboard (issue 14): a real cluster (a `dagml scheduler
//! --dashboard` and two `dagml worker` processes) watched by headless Chromium
//! during a run and after it; `/metrics` read by a Prometheus text-format
//! parser and compared with the run's own summary; the server-sent events; a
//! token-protected dashboard; `dagml run --dashboard` on the embedded cluster.
//!
//! Chromium is `/usr/bin/chromium` or `chromium` on the PATH (`.ci/run`
//! installs Debian's package when it runs as root); where there is none the
//! browser checks are skipped with a message, the HTTP checks still run.
//! Screenshots go to `target/dashboard-*.png`.

mod common;

use common::{Procs, dagml};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds: a server printing its dashboard address, the run, one browser.
const START: Duration = Duration::from_secs(60);
const RUN_LIMIT: Duration = Duration::from_secs(600);
const BROWSER_LIMIT: Duration = Duration::from_secs(90);

/// A status and a body (as text) from `GET path`.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = common::http::http(addr, "GET", path, headers, b"");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn state(addr: &str) -> serde_json::Value {
    let (code, body) = get(addr, "/api/state", &[]);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/api/state is JSON")
}

/// A scheduler with its dashboard on a free port, logging to `log`, with
/// `env`: its address and the dashboard's.
fn scheduler_with_dashboard(
    procs: &mut Procs,
    log: &Path,
    env: &[(&str, &str)],
) -> (String, String) {
    let sched = procs.serve_logging(
        "scheduler",
        &[
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--dashboard",
            "127.0.0.1:0",
        ],
        env,
        Some(log),
    );
    let board = dashboard_address(log, "dashboard on");
    (sched, board)
}

/// Wait (bounded) for a line of `log` that has `http://` after `marker`; the
/// host:port in it.
fn dashboard_address(log: &Path, marker: &str) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(marker))
            && let Some((_, url)) = line.split_once("http://")
        {
            return url.trim_end_matches('/').trim().to_string();
        }
        assert!(
            t0.elapsed() < START,
            "no `{marker}` line in {START:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn chromium() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.exists() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("chromium"))
            .find(|c| c.exists())
    })
}

/// Headless Chromium on `url`: its DOM after the scripts ran, and a
/// screenshot at `shot`. Bounded; never left running. `url` must have
/// `events=off` (see the flags).
fn browse(browser: &Path, url: &str, shot: &Path) -> String {
    let run = |extra: &[&str]| {
        let profile = tempfile::tempdir().expect("a profile folder");
        let mut cmd = Command::new(browser);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--window-size=1400,1000",
            // Virtual time until the network is idle: the pages read here
            // poll (`?events=off`), as an open event stream never lets the
            // network be idle (and `--dump-dom` without a budget dumps at the
            // load event, before the page has fetched anything).
            "--virtual-time-budget=2500",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url);
        let ran = common::python::run_bounded(&mut cmd, BROWSER_LIMIT)
            .unwrap_or_else(|e| panic!("chromium: {e}"));
        assert!(ran.ok(), "chromium on {url}: {}", ran.describe());
        ran.output
    };
    run(&[&format!("--screenshot={}", shot.display())]);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    let out = run(&["--dump-dom"]);
    // Chromium's own log lines (stderr) come before or after the DOM.
    let start = out.find("<html").unwrap_or(0);
    let end = out.rfind("</html>").map_or(out.len(), |i| i + 7);
    out[start..end].to_string()
}

fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).ok();
    dir.join(name)
}

/// The `data-state` of the plan node `id` in a dumped DOM.
fn node_state<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("data-node=\"{id}\""))?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[at..tag_end];
    let s = tag.find("data-state=\"")? + "data-state=\"".len();
    tag[s..].split('"').next()
}

/// Whether the JSON value holds the number `x` somewhere.
fn holds(v: &serde_json::Value, x: f64) -> bool {
    match v {
        serde_json::Value::Number(n) => n.as_f64() == Some(x),
        serde_json::Value::Array(a) => a.iter().any(|e| holds(e, x)),
        serde_json::Value::Object(o) => o.values().any(|e| holds(e, x)),
        _ => false,
    }
}

/// The cluster fixture with more trees, so that a browser sees it running.
fn slow_forest(dir: &Path) {
    let text = std::fs::read_to_string(common::FIXTURE).expect("fixture");
    let text = text.replace("n_trees = 60", "n_trees = 240");
    assert!(text.contains("n_trees = 240"));
    std::fs::write(dir.join("pipeline.toml"), text).expect("write pipeline");
}

#[test]
fn a_cluster_dashboard_shows_workers_plan_task_stream_and_metrics_during_and_after_a_run() {
    let mut procs = Procs::default();
    let dir = tempfile::tempdir().expect("tempdir");
    slow_forest(dir.path());
    let log = dir.path().join("scheduler.log");
    let (sched, board) = scheduler_with_dashboard(&mut procs, &log, &[]);
    for name in ["w0", "w1"] {
        procs.serve(
            name,
            &[
                "worker",
                &sched,
                "--nthreads",
                "2",
                "--memory-limit",
                "1GB",
                "--name",
                name,
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        );
    }
    let t0 = Instant::now();
    while state(&board)["workers"].as_array().map_or(0, |w| w.len()) < 2 {
        assert!(
            t0.elapsed() < START,
            "the workers did not show: {}",
            state(&board)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The event stream, read from before the run: a task starts.
    let events_at = board.clone();
    let events = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&events_at).expect("connect");
        s.set_read_timeout(Some(RUN_LIMIT)).ok();
        s.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {events_at}\r\n\r\n").as_bytes())
            .expect("send");
        let mut seen = Vec::new();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data:") {
                seen.push(data.trim().to_string());
                if data.contains("\"type\":\"task_started\"") {
                    break;
                }
            }
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(300));

    let timings = dir.path().join("timings.json");
    let mut run = dagml(None);
    run.current_dir(dir.path())
        .args([
            "run",
            "pipeline.toml",
            "--quiet",
            "--scheduler",
            &sched,
            "--timings",
        ])
        .arg(&timings)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    procs
        .0
        .push(("client".into(), run.spawn().expect("start the run")));

    // During the run: wait until a forest task runs.
    let t0 = Instant::now();
    loop {
        let s = state(&board);
        let running = s["runs"][0]["tasks"].as_array().is_some_and(|ts| {
            ts.iter()
                .any(|t| t["state"] == "running" && t["step"] == "fit:forest")
        });
        if running {
            break;
        }
        assert!(t0.elapsed() < RUN_LIMIT, "no forest task ran: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = events.join().expect("the event reader");
    assert!(
        seen.iter().any(|e| e.contains("\"type\":\"task_started\"")),
        "no task_started event: {seen:?}"
    );
    let browser = chromium();
    let url = format!("http://{board}/?events=off");
    if let Some(b) = &browser {
        let shot = artifact("dashboard-during.png");
        let dom = browse(b, &url, &shot);
        // The README's picture (docs/img/dashboard.png), when asked for.
        if std::env::var_os("DAGML_DASHBOARD_SCREENSHOT").is_some() {
            let img = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/dashboard.png");
            std::fs::create_dir_all(img.parent().expect("docs/img")).ok();
            std::fs::copy(&shot, &img).expect("copy the screenshot");
        }
        for w in ["w0", "w1"] {
            assert!(
                dom.contains(&format!("data-worker=\"{w}\"")),
                "{w} not shown:\n{dom}"
            );
        }
        let forest = node_state(&dom, "fit:forest");
        assert!(
            matches!(forest, Some("running" | "done")),
            "the forest node is {forest:?} during the run:\n{dom}"
        );
        assert!(dom.contains("class=\"bar k-"), "no task-stream bar:\n{dom}");
    } else {
        eprintln!(
            "SKIPPED the browser checks: no Chromium (/usr/bin/chromium or chromium on the PATH); .ci/run installs Debian's `chromium` when it runs as root"
        );
    }

    // After it.
    let pos = procs
        .0
        .iter()
        .position(|(n, _)| n == "client")
        .expect("client");
    let (_, mut client) = procs.0.remove(pos);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = client.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > RUN_LIMIT {
            let _ = client.kill();
            let _ = client.wait();
            panic!("the run took more than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = client.stderr.take() {
        e.read_to_string(&mut err).ok();
    }
    assert!(status.success(), "the run failed: {err}");

    // The run's own summary: tasks per step.
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&timings).expect("timings")).expect("JSON");
    let tasks: u64 = t["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["tasks"].as_u64().expect("tasks"))
        .sum();
    assert!(tasks > 10, "{t}");

    // /metrics, parsed as Prometheus does.
    let (code, text) = get(&board, "/metrics", &[]);
    assert_eq!(code, 200, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no {name} {label:?} in:\n{text}"));
        match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name} is {other:?}"),
        }
    };
    assert_eq!(
        value("dagml_tasks_finished_total", None),
        tasks as f64,
        "{text}"
    );
    assert_eq!(
        value("dagml_tasks_started_total", None),
        tasks as f64,
        "{text}"
    );
    assert_eq!(
        value("dagml_run_tasks", Some(("state", "done"))),
        tasks as f64,
        "{text}"
    );
    assert_eq!(value("dagml_runs_done_total", None), 1.0);
    assert_eq!(value("dagml_runs_failed_total", None), 0.0);
    assert_eq!(value("dagml_task_retries_total", None), 0.0);
    assert_eq!(value("dagml_workers_lost_total", None), 0.0);
    assert_eq!(value("dagml_workers", Some(("state", "alive"))), 2.0);
    assert!(value("dagml_bytes_moved_total", None) > 0.0, "{text}");
    assert_eq!(
        value("dagml_worker_memory_limit_bytes", Some(("worker", "w0"))),
        1e9
    );
    let durations = scrape
        .samples
        .iter()
        .find(|s| s.metric == "dagml_task_duration_seconds")
        .expect("the duration histogram");
    match &durations.value {
        prometheus_parse::Value::Histogram(b) => {
            let inf = b.iter().find(|c| c.less_than.is_infinite()).expect("+Inf");
            assert_eq!(inf.count, tasks as f64);
        }
        other => panic!("durations are {other:?}"),
    }

    // The page after the run: every step done, the metrics the run wrote.
    let written: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/metrics.json")).expect("metrics.json"),
    )
    .expect("JSON");
    let api = state(&board);
    let run0 = &api["runs"][0];
    assert_eq!(run0["state"], "done", "{api}");
    let evaluated = run0["evaluations"][0]["results"][0]["scores"]["accuracy"]
        .as_f64()
        .expect("an accuracy");
    assert!(
        holds(&written, evaluated),
        "{evaluated} is not in the run's metrics.json: {written}"
    );
    if let Some(b) = &browser {
        let shot = artifact("dashboard-after.png");
        let dom = browse(b, &url, &shot);
        for id in [
            "source:blobs",
            "split:holdout",
            "fit:forest",
            "evaluate:scores",
        ] {
            assert_eq!(node_state(&dom, id), Some("done"), "{id}:\n{dom}");
        }
        assert!(
            dom.contains("data-metric=\"accuracy\""),
            "no accuracy:\n{dom}"
        );
        assert!(
            dom.contains(&format!("{evaluated:.4}")),
            "the page does not show accuracy {evaluated:.4}:\n{dom}"
        );
        assert!(dom.contains("out/metrics.json"), "no output path:\n{dom}");
        for w in ["w0", "w1"] {
            assert!(
                dom.contains(&format!("data-worker=\"{w}\"")),
                "{w} not shown"
            );
        }
    }
}

#[test]
fn a_token_protected_dashboard_refuses_the_api_without_the_token() {
    let mut procs = Procs::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("scheduler.log");
    let token = "s3cret-t0ken/with=odd&chars";
    let (_, board) = scheduler_with_dashboard(&mut procs, &log, &[("DAGML_TOKEN", token)]);
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(token),
        "the token was logged"
    );
    for path in [
        "/api/state",
        "/api/workers",
        "/api/runs",
        "/metrics",
        "/api/events",
    ] {
        let (code, body) = get(&board, path, &[]);
        assert_eq!(code, 401, "{path} without the token: {body}");
        let (code, _) = get(&board, path, &[("Authorization", "Bearer wrong")]);
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    let bearer = format!("Bearer {token}");
    let (code, body) = get(&board, "/api/state", &[("Authorization", &bearer)]);
    assert_eq!(code, 200, "{body}");
    let cookie = "dagml_token=s3cret-t0ken%2Fwith%3Dodd%26chars";
    let (code, body) = get(&board, "/metrics", &[("Cookie", cookie)]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("dagml_workers"), "{body}");
    // The page itself carries no data: it loads, then asks for the token.
    let (code, page) = get(&board, "/", &[]);
    assert_eq!(code, 200);
    assert!(page.contains("id=\"login\""), "{page}");

    if let Some(b) = chromium() {
        let dom = browse(
            b.as_path(),
            &format!("http://{board}/?events=off"),
            &artifact("dashboard-login.png"),
        );
        assert!(
            dom.contains("<div id=\"login\">"),
            "without the token the page does not ask for it:\n{dom}"
        );
        let url = format!("http://{board}/?events=off&token=s3cret-t0ken%2Fwith%3Dodd%26chars");
        let dom = browse(b.as_path(), &url, &artifact("dashboard-token.png"));
        assert!(
            dom.contains("<div id=\"login\" hidden=\"\">"),
            "with ?token= the page still asks for it:\n{dom}"
        );
        assert!(dom.contains("no worker has registered"), "{dom}");
    } else {
        eprintln!("SKIPPED the browser checks: no Chromium");
    }
}

#[test]
fn run_on_the_embedded_cluster_serves_its_dashboard_and_prints_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(common::FIXTURE, dir.path().join("pipeline.toml")).expect("fixture");
    let hold = dir.path().join("go");
    let err = dir.path().join("run.log");
    let mut procs = Procs::default();
    let mut cmd = dagml(None);
    cmd.current_dir(dir.path())
        .args([
            "run",
            "pipeline.toml",
            "--quiet",
            "--workers",
            "2",
            "--dashboard",
            "127.0.0.1:0",
        ])
        .env("DAGML_EMBEDDED_HOLD", &hold)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("log"));
    procs.0.push(("run".into(), cmd.spawn().expect("start")));
    let board = dashboard_address(&err, "dashboard on");
    let s = state(&board);
    assert_eq!(s["workers"].as_array().map(|w| w.len()), Some(2), "{s}");
    std::fs::write(&hold, b"").expect("release the run");
    let (_, mut child) = procs.0.remove(0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run took more than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
}

#[test]
fn a_worker_killed_mid_fit_shows_as_lost_with_its_retried_task_and_cause() {
    let mut procs = Procs::default();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(common::FIXTURE, dir.path().join("pipeline.toml")).expect("fixture");
    let log = dir.path().join("scheduler.log");
    let (sched, board) = scheduler_with_dashboard(&mut procs, &log, &[]);
    for name in ["w0", "w1"] {
        procs.serve(
            name,
            &[
                "worker",
                &sched,
                "--nthreads",
                "1",
                "--name",
                name,
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        );
    }
    let mut run = dagml(None);
    run.current_dir(dir.path())
        .args([
            "run",
            "pipeline.toml",
            "--quiet",
            "--events",
            "--scheduler",
            &sched,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = run.spawn().expect("start the run");
    let stderr = child.stderr.take().expect("stderr");
    procs.0.push(("client".into(), child));
    // SIGKILL the worker that starts the first forest task.
    let mut killed = None;
    let mut lines = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        lines.push_str(&line);
        lines.push('\n');
        if killed.is_none()
            && let Some(w) = common::started_on(&line, "fit:forest/")
        {
            let w = w.to_string();
            procs.kill(&w);
            killed = Some(w);
        }
    }
    let killed = killed.unwrap_or_else(|| panic!("no forest task started:\n{lines}"));
    let pos = procs
        .0
        .iter()
        .position(|(n, _)| n == "client")
        .expect("client");
    let (_, mut client) = procs.0.remove(pos);
    let status = client.wait().expect("wait");
    assert!(status.success(), "the run failed:\n{lines}");

    let s = state(&board);
    let lost = s["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["name"] == killed.as_str())
        .unwrap_or_else(|| panic!("{killed} is not listed: {s}"));
    assert_eq!(lost["alive"], false, "{s}");
    let failures = s["runs"][0]["failures"].as_array().expect("failures");
    assert!(
        failures.iter().any(|f| f["kind"] == "worker-lost"
            && f["retried"] == true
            && f["worker"] == killed.as_str()),
        "no retried worker-lost failure on {killed}: {failures:?}"
    );
    // A done task whose outputs went with the worker is computed again, not
    // failed: every failure is the killed worker's, or a peer's lost input.
    assert!(
        failures.iter().all(
            |f| (f["kind"] == "worker-lost" && f["worker"] == killed.as_str())
                || f["kind"] == "lost-peer"
        ),
        "{failures:?}"
    );
    let (_, text) = get(&board, "/metrics", &[]);
    assert!(text.contains("\ndagml_workers_lost_total 1\n"), "{text}");
    assert!(!text.contains("\ndagml_task_retries_total 0\n"), "{text}");
    assert!(text.contains("dagml_workers{state=\"lost\"} 1"), "{text}");
    if let Some(b) = chromium() {
        let dom = browse(
            b.as_path(),
            &format!("http://{board}/?events=off"),
            &artifact("dashboard-lost-worker.png"),
        );
        assert!(
            dom.contains(&format!("<tr class=\"lost\" data-worker=\"{killed}\"")),
            "{killed} not shown lost:\n{dom}"
        );
        assert!(
            dom.contains("data-kind=\"worker-lost\""),
            "no worker-lost row:\n{dom}"
        );
    }
}

#[test]
fn workers_past_their_spill_threshold_report_their_spills_and_thresholds() {
    let mut procs = Procs::default();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(common::FIXTURE, dir.path().join("pipeline.toml")).expect("fixture");
    let log = dir.path().join("scheduler.log");
    let (sched, board) = scheduler_with_dashboard(&mut procs, &log, &[]);
    // The spill test's limit (tests/cluster.rs): every worker spills.
    let limit = "200KB";
    let mut worker_logs = Vec::new();
    for name in ["w0", "w1"] {
        let wlog = dir.path().join(format!("{name}.log"));
        procs.serve_logging(
            name,
            &[
                "worker",
                &sched,
                "--nthreads",
                "1",
                "--memory-limit",
                limit,
                "--name",
                name,
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
            Some(&wlog),
        );
        worker_logs.push(wlog);
    }
    let out = dagml(None)
        .current_dir(dir.path())
        .args(["run", "pipeline.toml", "--quiet", "--scheduler", &sched])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", common::text(&out));
    // What the workers logged they spilled, against what their heartbeats said.
    let logged: u64 = worker_logs
        .iter()
        .flat_map(|l| {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| {
                    let (_, rest) = line.split_once("` (")?;
                    rest.split_once(" bytes)")?.0.parse::<u64>().ok()
                })
                .collect::<Vec<_>>()
        })
        .sum();
    assert!(logged > 0, "nothing was spilled");
    // The next heartbeats carry the last spills.
    let t0 = Instant::now();
    loop {
        let s = state(&board);
        let workers = s["workers"].as_array().expect("workers");
        let reported: u64 = workers
            .iter()
            .map(|w| w["stats"]["spilled_bytes"].as_u64().unwrap_or(0))
            .sum();
        if reported == logged {
            for w in workers {
                assert_eq!(w["stats"]["memory_limit"], 200_000, "{w}");
                assert_eq!(w["stats"]["spill_threshold"], 140_000, "{w}");
                assert_eq!(w["stats"]["pause_threshold"], 170_000, "{w}");
            }
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the heartbeats say {reported} bytes spilled, the logs {logged}: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, text) = get(&board, "/metrics", &[]);
    assert!(
        text.contains(&format!("\ndagml_spilled_bytes_total {logged}\n")),
        "{text}"
    );
}

/// A small per-shard forest on House Prices, three shards by rows (as
/// tests/serve_cluster.rs serves it).
const SERVED: &str = include_str!("fixtures/served_shards.toml");

/// `POST path` with `body`: the status and the body's bytes.
fn post(addr: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (status, _, body) =
        common::http::http(addr, "POST", path, &[("Content-Type", ctype)], body);
    (status, body)
}

#[test]
fn served_shard_models_show_their_versions_request_counts_and_latency() {
    const N: u64 = 25;
    let mut procs = Procs::default();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pipeline.toml"), SERVED).expect("write the pipeline");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/house_prices/train.csv"),
        dir.path().join("train.csv"),
    )
    .expect("copy train.csv");
    let log = dir.path().join("scheduler.log");
    let (sched, board) = scheduler_with_dashboard(&mut procs, &log, &[]);
    let root = dir.path().to_string_lossy().into_owned();
    let workers = ["w0", "w1", "w2"];
    for name in workers {
        procs.serve(
            name,
            &[
                "worker",
                &sched,
                "--name",
                name,
                "--listen",
                "127.0.0.1:0",
                "--data-root",
                &root,
            ],
            &[],
        );
    }
    // Before anything is served, the page and /api/serving say so.
    let (code, body) = get(&board, "/api/serving", &[]);
    assert_eq!(code, 200, "{body}");
    let none: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(none["models"], serde_json::json!([]), "{none}");

    let mut cmd = dagml(None);
    cmd.current_dir(dir.path()).args([
        "serve",
        "pipeline.toml",
        "--scheduler",
        &sched,
        "--listen",
        "127.0.0.1:0",
    ]);
    let front = procs.serve_command("serve", cmd, Some(&dir.path().join("serve.log")));

    // N requests of the test set's rows, in the model's inputs, as Arrow.
    let predicted = dir.path().join("predicted.arrow");
    let out = dagml(None)
        .current_dir(dir.path())
        .args(["predict", "out/ensemble.model"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/house_prices/test.csv"
        ))
        .arg("-o")
        .arg(&predicted)
        .output()
        .expect("dagml predict");
    assert!(out.status.success(), "{}", common::text(&out));
    let rows = common::http::read_arrow(&std::fs::read(&predicted).expect("read"));
    let (code, meta) = get(&front, "/v2/models/ensemble", &[]);
    assert_eq!(code, 200, "{meta}");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("JSON");
    let idx: Vec<usize> = meta["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| {
            rows.schema()
                .index_of(i["name"].as_str().expect("name"))
                .expect("a feature of test.csv")
        })
        .collect();
    let input = rows.project(&idx).expect("project").slice(0, 10);
    let mut body = Vec::new();
    {
        let mut w =
            arrow::ipc::writer::StreamWriter::try_new(&mut body, &input.schema()).expect("writer");
        w.write(&input).expect("write");
        w.finish().expect("finish");
    }
    for i in 0..N {
        let (code, answer) = post(
            &front,
            "/v2/models/ensemble/infer",
            "application/vnd.apache.arrow.stream",
            &body,
        );
        assert_eq!(
            code,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&answer)
        );
        let params = common::http::read_arrow(&answer)
            .schema()
            .metadata()
            .get("parameters")
            .cloned()
            .unwrap_or_default();
        assert!(
            params.contains("\"degraded\":false"),
            "request {i}: {params}"
        );
    }

    // The next heartbeats carry the counts: every shard answered each request once.
    let t0 = Instant::now();
    let served = loop {
        let (code, body) = get(&board, "/api/serving", &[]);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let shards = v["models"][0]["shards"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let counted = |s: &str| -> u64 {
            shards
                .iter()
                .filter(|h| h["shard"] == s)
                .map(|h| h["requests"].as_u64().unwrap_or(0))
                .sum()
        };
        if ["A", "B", "C"].iter().all(|s| counted(s) >= N) {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the dashboard does not count {N} requests per shard: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let model = &served["models"][0];
    assert_eq!(model["model"], "ensemble", "{served}");
    let shards = model["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "one holder per shard: {served}");
    for (h, name) in shards.iter().zip(["A", "B", "C"]) {
        assert_eq!(h["shard"], name, "{served}");
        assert_eq!(h["version"], 1, "{served}");
        assert_eq!(h["versions"], 1, "{served}");
        assert_eq!(h["current"], true, "{served}");
        assert_eq!(h["alive"], true, "{served}");
        assert_eq!(h["requests"], N, "exactly one call per request: {served}");
        assert_eq!(h["errors"], 0, "{served}");
        assert!(
            workers.contains(&h["worker"].as_str().unwrap_or("")),
            "{served}"
        );
        let (p50, p99) = (
            h["p50_ms"].as_f64().expect("a p50"),
            h["p99_ms"].as_f64().expect("a p99"),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{served}");
        assert!(h["mean_ms"].as_f64().expect("a mean") > 0.0, "{served}");
        let buckets: u64 = h["latency_buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .filter_map(|b| b.as_u64())
            .sum();
        assert_eq!(buckets, N, "{served}");
    }
    // /api/state carries the same holders. Their rate is measured between two
    // heartbeats, so a heartbeat between the two reads may change it: compare
    // everything but the rate.
    let without_rate = |models: &serde_json::Value| -> serde_json::Value {
        let mut models = models.clone();
        for m in models.as_array_mut().into_iter().flatten() {
            for h in m["shards"].as_array_mut().into_iter().flatten() {
                if let Some(h) = h.as_object_mut() {
                    h.remove("requests_per_s");
                }
            }
        }
        models
    };
    assert_eq!(
        without_rate(&state(&board)["serving"]),
        without_rate(&served["models"])
    );

    // /metrics, parsed as Prometheus does.
    let (code, text) = get(&board, "/metrics", &[]);
    assert_eq!(code, 200, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses");
    for name in ["A", "B", "C"] {
        let of = |metric: &str| {
            scrape
                .samples
                .iter()
                .filter(|s| {
                    s.metric == metric
                        && s.labels.get("model") == Some("ensemble")
                        && s.labels.get("shard") == Some(name)
                })
                .collect::<Vec<_>>()
        };
        let value = |metric: &str| -> f64 {
            of(metric)
                .iter()
                .map(|s| match &s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => *v,
                    other => panic!("{metric} is {other:?}"),
                })
                .sum()
        };
        assert_eq!(value("dagml_serving_requests_total"), N as f64, "{text}");
        assert_eq!(value("dagml_serving_errors_total"), 0.0, "{text}");
        assert_eq!(value("dagml_serving_version"), 1.0, "{text}");
        let hist = of("dagml_serving_latency_seconds");
        assert_eq!(hist.len(), 1, "one histogram for shard {name}:\n{text}");
        match &hist[0].value {
            prometheus_parse::Value::Histogram(b) => {
                let inf = b.iter().find(|c| c.less_than.is_infinite()).expect("+Inf");
                assert_eq!(inf.count, N as f64, "{text}");
            }
            other => panic!("the latency is {other:?}"),
        }
    }

    if let Some(b) = chromium() {
        let dom = browse(
            b.as_path(),
            &format!("http://{board}/?events=off"),
            &artifact("dashboard-serving.png"),
        );
        for name in ["A", "B", "C"] {
            let row = format!("data-model=\"ensemble\" data-shard=\"{name}\"");
            let at = dom
                .find(&row)
                .unwrap_or_else(|| panic!("no serving row of shard {name}:\n{dom}"));
            let tag = &dom[at..at + dom[at..].find('>').expect("a tag")];
            assert!(
                tag.contains("data-version=\"1\"")
                    && tag.contains(&format!("data-requests=\"{N}\"")),
                "{tag}"
            );
        }
    } else {
        eprintln!("SKIPPED the browser checks: no Chromium");
    }
}
