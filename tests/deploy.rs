//! The deployment shape, for real but without containers:
//!
//! * **Kubernetes' command lines on network hosts.** The scheduler, two
//!   workers and the run Job of deploy/k8s/base each run on a network host of
//!   their own (network namespaces on a bridge, with addresses of their own,
//!   made and removed here), started with exactly the `command`, `args` and
//!   `env` their manifests give: `$(VAR)` references expanded as Kubernetes
//!   does, the Downward API values computed from the pod's resources as the
//!   kubelet does (CPU rounded up to whole CPUs, memory in bytes), the
//!   Secrets' values made here (a random token, a CA and a certificate it
//!   signs for the names docs/deploy.md gives). The Services' DNS names resolve through each
//!   host's `/etc/netns/NS/hosts`, so TLS checks the same names as in a
//!   cluster. Volume paths are the manifests' own: each host sees its own
//!   folder at the data root's path (a private mount namespace), as a pod sees
//!   its volume, and one shared folder at /data/run (the ReadWriteMany claim
//!   `dagml-runs`). The probes are asked as the kubelet would ask them, and
//!   the Job's run puts the in-process run's bytes in the shared run folder
//!   (staged by the workers, committed by the Job; no temporary file left).
//! * **The drain.** A worker process sent SIGTERM mid-run stops taking tasks,
//!   finishes the one it runs, leaves, and exits 0 within its drain timeout;
//!   the run gives the in-process bytes and the scheduler's log shows the
//!   drain. With a drain timeout of 0 it hands its task back instead.
//!
//! Every process is owned by `common::Procs` (SIGKILLed on drop); the hosts,
//! their hosts files and the bridge by `Hosts` (removed on drop), pass or
//! fail. The namespace test needs root, `ip`, `unshare` and `mount`; without
//! them it prints why and passes without running.

mod common;

use common::netns::{Hosts, have, is_root};
use common::{
    OUTPUTS, Procs, TEST_ENV, assert_same_as_in_process, dagml, reference, signal, started_on,
    wait_for_lines, workdir,
};
use serde_yaml_ng::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a run of the fixture may take here (a debug build on a loaded host).
const RUN_BOUND: Duration = Duration::from_secs(120);
/// Longest the servers may take to register.
const REGISTER_BOUND: Duration = Duration::from_secs(30);
/// A worker's default drain timeout (20 s) and room to leave and stop.
const DRAIN_BOUND: Duration = Duration::from_secs(28);

const K8S_BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s/base");

// ---------------------------------------------------------------------------
// Shared helpers.

/// Run `cmd` (owned by `procs` while it runs) to its end, at most
/// `RUN_BOUND`; `on_line` sees each stderr line as it comes.
fn run_watched(
    procs: &mut Procs,
    mut cmd: Command,
    mut on_line: impl FnMut(&mut Procs, &str),
) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the client");
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
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = BufReader::new(stdout).read_to_end(&mut v);
        v
    });
    let t0 = Instant::now();
    let mut log = String::new();
    loop {
        match rx.recv_timeout(RUN_BOUND.saturating_sub(t0.elapsed())) {
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
    let pos = procs.0.iter().position(|(n, _)| n == "client");
    let (_, mut client) = procs.0.remove(pos.expect("client"));
    let status = client.wait().expect("wait for the client");
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: log.into_bytes(),
    }
}

/// Wait (at most `bound`) for the process started as `name` to exit; its
/// exit status and how long it took.
fn wait_exit(
    procs: &mut Procs,
    name: &str,
    bound: Duration,
) -> (std::process::ExitStatus, Duration) {
    let t0 = Instant::now();
    let child = &mut procs
        .0
        .iter_mut()
        .find(|(n, _)| n == name)
        .expect("a process of that name")
        .1;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return (s, t0.elapsed());
        }
        assert!(t0.elapsed() < bound, "{name} did not exit within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// The drain, on worker processes on 127.0.0.1.

/// A scheduler and workers w0, w1 (with `extra` worker flags) on 127.0.0.1;
/// the scheduler's stderr in `dir/scheduler.log`, each worker's in
/// `dir/NAME.log`.
fn loopback_cluster(procs: &mut Procs, dir: &Path, extra: &[&str]) -> String {
    let log = dir.join("scheduler.log");
    let sched = procs.serve_logging(
        "scheduler",
        &["scheduler", "--listen", "127.0.0.1:0"],
        &[],
        Some(&log),
    );
    for name in ["w0", "w1"] {
        let mut args = vec![
            "worker",
            &sched,
            "--nthreads",
            "1",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut cmd = dagml(None);
        cmd.args(&args);
        procs.serve_command(name, cmd, Some(&dir.join(format!("{name}.log"))));
    }
    wait_for_lines(&log, "registered at", 2, REGISTER_BOUND);
    sched
}

/// SIGTERM the worker that starts a task beginning with `at`; the run gives
/// the in-process bytes and the worker exits 0 within `DRAIN_BOUND`.
/// Returns the worker's name, the client's output and the logs' folder.
fn sigterm_at(at: &str, extra: &[&str]) -> (String, Output, tempfile::TempDir) {
    let _ = reference();
    let mut procs = Procs::default();
    let d = workdir();
    let logs = tempfile::tempdir().expect("tempdir");
    let sched = loopback_cluster(&mut procs, logs.path(), extra);
    let mut run = dagml(None);
    run.current_dir(d.path()).args([
        "run",
        "pipeline.toml",
        "--quiet",
        "--events",
        "--scheduler",
        &sched,
    ]);
    let mut termed: Option<String> = None;
    let out = run_watched(&mut procs, run, |procs, line| {
        if termed.is_none()
            && let Some(w) = started_on(line, at)
        {
            // Frozen while the signal is sent, so the task it just started
            // is still in flight when the drain begins, however slowly this
            // line reached the test (a loaded machine may otherwise let a
            // short task finish first, and a zero drain timeout would then
            // find nothing to hand back).
            let pid = procs.pid(w).expect("the worker's pid");
            signal(pid, "STOP");
            signal(pid, "TERM");
            signal(pid, "CONT");
            termed = Some(w.to_string());
        }
    });
    let w = termed.unwrap_or_else(|| {
        panic!(
            "no task `{at}` started:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_same_as_in_process(d.path(), &out);
    let (status, took) = wait_exit(&mut procs, &w, DRAIN_BOUND);
    println!("SIGTERM to {w} at `{at}`: it exited ({status}) {took:?} after the run ended");
    assert!(status.success(), "{w} exited with {status}");
    drop(procs);
    (w, out, logs)
}

#[test]
fn a_worker_sent_sigterm_mid_fit_finishes_its_task_leaves_and_the_run_gives_the_same_bytes() {
    let (w, out, logs) = sigterm_at("fit:forest/g1", &[]);
    let events = String::from_utf8_lossy(&out.stderr);
    let sched = std::fs::read_to_string(logs.path().join("scheduler.log")).unwrap_or_default();
    let wlog = std::fs::read_to_string(logs.path().join(format!("{w}.log"))).unwrap_or_default();
    // The scheduler heard the drain, then the worker left with nothing
    // running: it finished what it had.
    let line_of = |what: &str| {
        sched
            .lines()
            .position(|l| l.contains(&format!("worker {w} (")) && l.contains(what))
    };
    let draining = line_of("draining: no new tasks");
    let left = line_of("lost: drained: its tasks finished");
    assert!(
        matches!((draining, left), (Some(a), Some(b)) if a < b),
        "the scheduler's log does not show {w} draining, then leaving:\n{sched}"
    );
    assert!(wlog.contains("draining: no new tasks"), "{wlog}");
    assert!(wlog.contains("left the cluster"), "{wlog}");
    // The task it ran when SIGTERM came finished there, and was not run again.
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("finished fit:forest/g1 ") && l.contains(&format!(" on {w}"))),
        "{events}"
    );
    assert!(
        !events
            .lines()
            .any(|l| started_on(l, "fit:forest/g1").is_some() && l.contains("attempt 2")),
        "{events}"
    );
}

#[test]
fn a_worker_whose_drain_times_out_hands_its_task_back_and_the_run_gives_the_same_bytes() {
    // The task must still be running when the drain begins; on a loaded
    // machine the start event may reach the test after a short task has
    // finished (the worker then leaves with nothing to hand back, which the
    // scheduler's log says): then the scenario is tried again, at most 3
    // times.
    let mut tries = 0;
    let (w, out, sched) = loop {
        tries += 1;
        let (w, out, logs) = sigterm_at("fit:forest/g1", &["--drain-timeout", "0"]);
        let sched = std::fs::read_to_string(logs.path().join("scheduler.log")).unwrap_or_default();
        if tries < 3 && sched.contains("lost: drained: its tasks finished") {
            println!("try {tries}: {w}'s task finished before its drain began; again");
            continue;
        }
        break (w, out, sched);
    };
    let events = String::from_utf8_lossy(&out.stderr);
    assert!(
        sched.contains(&format!("worker {w} ("))
            && sched.contains("lost: drained: its drain timed out"),
        "{sched}"
    );
    // Handed back: it ran again (on the other worker, the only one left).
    assert!(
        events
            .lines()
            .any(|l| started_on(l, "fit:forest/g1").is_some_and(|on| on != w)),
        "{events}"
    );
}

// ---------------------------------------------------------------------------
// The manifests.

fn load(file: &str) -> Vec<Value> {
    let path = Path::new(K8S_BASE).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .collect()
}

/// The object of `kind` named `name` in `file`.
fn object(file: &str, kind: &str, name: &str) -> Value {
    load(file)
        .into_iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in {file}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A Kubernetes quantity (`2`, `500m`, `3Gi`, `1536Mi`) in its base unit.
fn quantity(q: &str) -> f64 {
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    n * match unit {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => panic!("unit of {q}"),
    }
}

/// `$(VAR)` expanded as Kubernetes does: a defined VAR is replaced, `$$` is
/// one `$`, anything else is left as it is.
fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(v) = vars.get(&inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What the kubelet knows of a pod that a container's env can ask for.
struct Pod<'a> {
    name: &'a str,
    namespace: &'a str,
    ip: &'a str,
    secrets: &'a HashMap<(String, String), String>,
}

/// A container's argv (command then args) and environment, as the kubelet
/// would start it in `pod`.
fn command_line(container: &Value, pod: &Pod) -> (Vec<String>, Vec<(String, String)>) {
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut env = Vec::new();
    for e in container["env"].as_sequence().into_iter().flatten() {
        let name = text(&e["name"]);
        let from = &e["valueFrom"];
        let value = if !e["value"].is_null() {
            expand(&text(&e["value"]), &vars)
        } else if !from["fieldRef"].is_null() {
            match text(&from["fieldRef"]["fieldPath"]).as_str() {
                "metadata.name" => pod.name.to_string(),
                "metadata.namespace" => pod.namespace.to_string(),
                "status.podIP" => pod.ip.to_string(),
                other => panic!("fieldRef {other} is not modelled here"),
            }
        } else if !from["resourceFieldRef"].is_null() {
            let r = &from["resourceFieldRef"];
            let resource = text(&r["resource"]);
            let (which, what) = resource.split_once('.').expect("limits.cpu and the like");
            let q = quantity(&text(&container["resources"][which][what]));
            let divisor = if r["divisor"].is_null() {
                1.0
            } else {
                quantity(&text(&r["divisor"]))
            };
            // The kubelet rounds up to a whole number of divisors.
            format!("{}", (q / divisor).ceil() as u64)
        } else if !from["secretKeyRef"].is_null() {
            let k = (
                text(&from["secretKeyRef"]["name"]),
                text(&from["secretKeyRef"]["key"]),
            );
            pod.secrets
                .get(&k)
                .unwrap_or_else(|| panic!("no secret {k:?}"))
                .clone()
        } else {
            panic!("env {name}: a source not modelled here");
        };
        vars.insert(name.clone(), value.clone());
        env.push((name, value));
    }
    let argv = container["command"]
        .as_sequence()
        .into_iter()
        .flatten()
        .chain(container["args"].as_sequence().into_iter().flatten())
        .map(|a| expand(&text(a), &vars))
        .collect();
    (argv, env)
}

fn containers(o: &Value) -> &Value {
    &o["spec"]["template"]["spec"]["containers"][0]
}

// ---------------------------------------------------------------------------
// Network hosts with names.

/// One host per entry of `names` (each host's DNS names), each with a hosts
/// file naming every host, or why they cannot be made here.
fn named_hosts(names: &[Vec<String>]) -> Result<Hosts, String> {
    if !is_root() {
        return Err("not root".into());
    }
    for tool in ["ip", "unshare", "mount"] {
        if !have(tool) {
            return Err(format!("no `{tool}`"));
        }
    }
    let tag = (std::process::id() % 100_000).to_string();
    let subnet = std::process::id() % 250 + 1;
    let roles: Vec<String> = (0..names.len()).map(|i| format!("h{i}")).collect();
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let mut h = Hosts::new("dk", &tag, &format!("10.214.{subnet}"), &roles)?;
    h.name(names)?;
    Ok(h)
}

/// The container paths every host sees, and where they are here: the data
/// root (each host binds its own folder over one path, in a private mount
/// namespace, as a pod gets its own volume) and the TLS secret (shared).
struct Mounts {
    /// (container path, path here)
    map: Vec<(String, String)>,
}

impl Mounts {
    fn path(&self, s: &str) -> String {
        for (from, to) in &self.map {
            if let Some(rest) = s.strip_prefix(from.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{to}{rest}");
            }
        }
        s.to_string()
    }

    /// Every path in `argv` and `env` (a whole word or after `--flag=`)
    /// moved to where it is here; a volume mounted elsewhere fails the test
    /// (this table would miss it).
    fn apply(&self, container: &Value, argv: &mut [String], env: &mut [(String, String)]) {
        for m in container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let p = text(&m["mountPath"]);
            assert!(
                self.map
                    .iter()
                    .any(|(from, _)| p.starts_with(from.as_str())),
                "volume mount {p} is not modelled by this test"
            );
        }
        let fix = |s: &mut String| match s.split_once('=') {
            Some((flag, v)) if flag.starts_with("--") => *s = format!("{flag}={}", self.path(v)),
            _ => *s = self.path(s),
        };
        argv.iter_mut().for_each(fix);
        env.iter_mut().for_each(|(_, v)| fix(v));
    }
}

/// `argv` (from a manifest, `dagml` first) inside host `ns`, with each of
/// `binds` (a volume here, the path it is mounted over) bound in order in a
/// mount namespace of its own when there are any (and then started in folder
/// `cwd`, seen through those mounts), and exactly `env`.
fn on_host(
    ns: &str,
    binds: &[(&Path, &Path)],
    cwd: &str,
    argv: &[String],
    env: &[(String, String)],
) -> Command {
    assert_eq!(argv[0], "dagml", "the manifests run dagml");
    let bin = env!("CARGO_BIN_EXE_dagml");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    if !binds.is_empty() {
        // ip execs unshare, which execs sh, which execs dagml: the child is
        // dagml itself (signals reach it).
        cmd.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                r#"cd="$0"; while [ "$1" != "--" ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; shift; cd "$cd" && exec "$@""#,
            )
            .arg(cwd);
        for (from, onto) in binds {
            cmd.arg(from).arg(onto);
        }
        cmd.arg("--");
    }
    cmd.arg(bin).args(&argv[1..]);
    for var in TEST_ENV.iter().chain(&["DAGML_HEALTH_ADDR"]) {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Ask the gRPC probe of `container` on host `ns` at `ip`, as the kubelet
/// does (plain, no token, the pod's address and the probe's port).
fn probe(ns: &str, ip: &str, container: &Value, which: &str) -> Output {
    let grpc = &container[which]["grpc"];
    assert!(!grpc.is_null(), "{which} is a grpc probe");
    let mut cmd = on_host(
        ns,
        &[],
        "/",
        &[
            "dagml".into(),
            "health".into(),
            "--plain".into(),
            format!("{ip}:{}", text(&grpc["port"])),
            "--service".into(),
            if grpc["service"].is_null() {
                String::new()
            } else {
                text(&grpc["service"])
            },
        ],
        &[],
    );
    cmd.stdin(Stdio::null()).output().expect("run dagml health")
}

#[test]
fn the_kubernetes_manifests_command_lines_run_the_pipeline_on_separate_network_hosts() {
    const NAMESPACE: &str = "dagml-test";
    let worker_dns =
        |i: usize| format!("dagml-worker-{i}.dagml-worker.{NAMESPACE}.svc.cluster.local");
    let names = vec![
        vec![
            "dagml-scheduler".to_string(),
            format!("dagml-scheduler.{NAMESPACE}.svc.cluster.local"),
        ],
        vec![worker_dns(0)],
        vec![worker_dns(1)],
        vec!["dagml-run".to_string()],
    ];
    let hosts = match named_hosts(&names) {
        Ok(h) => h,
        Err(why) => {
            println!("skipped: cannot make network hosts here ({why})");
            return;
        }
    };
    let (ref_stdout, ref_files) = reference();

    // The pipeline the Job runs is the fixture the reference ran.
    let cm = object("pipeline.yaml", "ConfigMap", "dagml-pipeline");
    let pipeline = text(&cm["data"]["pipeline.toml"]);
    let fixture = std::fs::read_to_string(common::FIXTURE).expect("fixture");
    assert_eq!(
        pipeline, fixture,
        "the ConfigMap's pipeline is tests/fixtures/cluster_forest.toml"
    );

    // The Secrets: a token, and a CA and the one certificate it signs for
    // the Services' names, as docs/deploy.md makes them.
    let t = tempfile::tempdir().expect("tempdir");
    let tls = t.path().join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![
        "dagml-scheduler".to_string(),
        format!("dagml-scheduler.{NAMESPACE}.svc.cluster.local"),
        format!("*.dagml-worker.{NAMESPACE}.svc.cluster.local"),
    ])
    .expect("params")
    .signed_by(&leaf_key, &issuer)
    .expect("a certificate");
    std::fs::write(tls.join("tls.crt"), leaf.pem()).expect("write");
    std::fs::write(tls.join("ca.crt"), ca.pem()).expect("write");
    std::fs::write(tls.join("tls.key"), leaf_key.serialize_pem()).expect("write");
    let token = dagml::cluster::auth::random_token();
    let secrets: HashMap<(String, String), String> =
        HashMap::from([(("dagml-token".into(), "token".into()), token)]);
    let data_root = t.path().join("data"); // every host's view of /data
    std::fs::create_dir_all(&data_root).expect("data root");
    // The ReadWriteMany claim `dagml-runs`: /data/run of the Job and every worker.
    let runs = t.path().join("runs");
    std::fs::create_dir_all(&runs).expect("runs");
    let mounts = Mounts {
        map: vec![
            ("/etc/dagml/tls".into(), tls.to_string_lossy().into_owned()),
            ("/data".into(), data_root.to_string_lossy().into_owned()),
        ],
    };

    let mut procs = Procs::default();
    let sched_log = t.path().join("scheduler.log");
    let dep = object("scheduler.yaml", "Deployment", "dagml-scheduler");
    let c = containers(&dep);
    let pod = Pod {
        name: "dagml-scheduler-0",
        namespace: NAMESPACE,
        ip: hosts.addr(0),
        secrets: &secrets,
    };
    let (mut argv, mut env) = command_line(c, &pod);
    mounts.apply(c, &mut argv, &mut env);
    println!("scheduler: {}", argv.join(" "));
    procs.serve_command(
        "scheduler",
        on_host(hosts.ns(0), &[], "/", &argv, &env),
        Some(&sched_log),
    );

    let sts = object("workers.yaml", "StatefulSet", "dagml-worker");
    let wc = containers(&sts);
    let mut volumes = Vec::new();
    for i in 0..2 {
        let name = format!("dagml-worker-{i}");
        let pod = Pod {
            name: &name,
            namespace: NAMESPACE,
            ip: hosts.addr(i + 1),
            secrets: &secrets,
        };
        let (mut argv, mut env) = command_line(wc, &pod);
        mounts.apply(wc, &mut argv, &mut env);
        println!("{name}: {}", argv.join(" "));
        let volume = t.path().join(format!("volume-{name}"));
        // The shared run folder is mounted over /data/run inside it.
        std::fs::create_dir_all(volume.join("run")).expect("volume");
        let cmd = on_host(
            hosts.ns(i + 1),
            &[(&volume, &data_root), (&runs, &data_root.join("run"))],
            "/",
            &argv,
            &env,
        );
        procs.serve_command(&name, cmd, Some(&t.path().join(format!("{name}.log"))));
        volumes.push(volume);
    }
    wait_for_lines(&sched_log, "registered at", 2, REGISTER_BOUND);
    let log = std::fs::read_to_string(&sched_log).unwrap_or_default();
    for i in 0..2 {
        // Registered under its stable DNS name, from the Downward API.
        assert!(
            log.contains(&format!("registered at {}:7071", worker_dns(i))),
            "{log}"
        );
        // Downward API: 2 CPUs → --nthreads 2.
        assert!(log.contains("(2 threads)"), "{log}");
    }

    // The probes, as the kubelet asks them.
    for (i, c) in [(0, c), (1, wc), (2, wc)] {
        for which in ["readinessProbe", "livenessProbe"] {
            let out = probe(hosts.ns(i), hosts.addr(i), c, which);
            assert!(
                out.status.success(),
                "{which} of host {i}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // The Job, with its pipeline from the ConfigMap (subPath) in its run folder.
    let job = object("job.yaml", "Job", "dagml-run");
    let jc = containers(&job);
    let pod = Pod {
        name: "dagml-run-x",
        namespace: NAMESPACE,
        ip: hosts.addr(3),
        secrets: &secrets,
    };
    let (mut argv, mut env) = command_line(jc, &pod);
    mounts.apply(jc, &mut argv, &mut env);
    println!("job: {}", argv.join(" "));
    let job_volume = t.path().join("volume-job");
    std::fs::create_dir_all(job_volume.join("run")).expect("job volume");
    // The ConfigMap's file, in the run folder (a subPath mount in the Job).
    std::fs::write(runs.join("pipeline.toml"), &pipeline).expect("pipeline");
    // The control port speaks TLS with the token: with the Job's CA and token
    // the scheduler's name checks out; plain, it is refused.
    let ask = |env: &[(String, String)]| {
        let argv: Vec<String> = [
            "dagml",
            "health",
            "dagml-scheduler:7070",
            "--service",
            "dagml.v1.Scheduler",
        ]
        .map(String::from)
        .to_vec();
        on_host(hosts.ns(3), &[], "/", &argv, env)
            .stdin(Stdio::null())
            .output()
            .expect("dagml health")
    };
    let with = ask(&env);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(!ask(&[]).status.success(), "a plain client was served");
    let cwd = mounts.path(&text(&jc["workingDir"]));
    let cmd = on_host(
        hosts.ns(3),
        &[(&job_volume, &data_root), (&runs, &data_root.join("run"))],
        &cwd,
        &argv,
        &env,
    );
    let t0 = Instant::now();
    let out = run_watched(&mut procs, cmd, |_, _| {});
    println!("the Job's run took {:?}", t0.elapsed());
    assert!(
        out.status.success(),
        "the Job failed:\n{}\nscheduler:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&sched_log).unwrap_or_default()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(ref_stdout)
    );
    // Every output is in the shared run folder, with the in-process run's
    // bytes, put in place by the Job; no worker's own volume has one.
    for (name, want) in ref_files {
        let got = std::fs::read(runs.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == *want, "{name} differs from the in-process run");
        for v in &volumes {
            assert!(
                !v.join("run").join(name).exists(),
                "{name} on {}",
                v.display()
            );
        }
    }
    let left: Vec<String> = std::fs::read_dir(runs.join("out"))
        .expect("out")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert_eq!(ref_files.len(), OUTPUTS.len());
    drop(procs);
    drop(hosts);
}
