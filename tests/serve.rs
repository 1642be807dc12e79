//! `dagml serve`: model files answering with the Open Inference Protocol.
//!
//! A small forest classifier (text and missing values among its inputs) and a
//! ridge regressor are trained once per test binary from
//! tests/fixtures/serve/pipeline.toml; `dagml predict` scores
//! data/house_prices/test.csv with each, and every served answer must equal
//! those predictions bit for bit. tritonclient (PyPI `tritonclient[http]`,
//! installed under target/ by the test, or `DAGML_TEST_TRITON_PYTHON`) speaks
//! to the server as NVIDIA's and KServe's clients do; the bad requests are sent
//! by hand over a socket. Every server is a child process owned by a guard that
//! kills it, and every wait is bounded.

mod common;

use arrow::array::{Array, Float32Array, Float64Array, StringArray};
use arrow::record_batch::RecordBatch;
use common::Procs;
use common::http::{http, read_arrow};
use common::python::{self, Need, Python, run_bounded};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/serve/pipeline.toml"
);
const TRAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/house_prices/train.csv");
const TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/house_prices/test.csv");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serve_conformance.py");
const MODELS: [&str; 2] = ["forest", "linear"];

/// The models' folder, and `dagml predict`'s answers on test.csv per model.
struct Trained {
    dir: tempfile::TempDir,
    predicted: Vec<(String, RecordBatch)>,
}

impl Trained {
    fn model(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("out/{name}.model"))
            .to_string_lossy()
            .into_owned()
    }

    fn predicted(&self, name: &str) -> &RecordBatch {
        &self
            .predicted
            .iter()
            .find(|(n, _)| n == name)
            .expect("model")
            .1
    }
}

fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(FIXTURE)
            .expect("fixture")
            .replace("HOUSES", TRAIN);
        std::fs::write(dir.path().join("pipeline.toml"), text).expect("write");
        let out = common::dagml(None)
            .current_dir(dir.path())
            .args(["run", "pipeline.toml", "--quiet", "--in-process"])
            .output()
            .expect("run dagml");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut predicted = Vec::new();
        for m in MODELS {
            let dest = dir.path().join(format!("{m}.arrow"));
            let out = common::dagml(None)
                .current_dir(dir.path())
                .args(["predict", &format!("out/{m}.model"), TEST, "-o"])
                .arg(&dest)
                .output()
                .expect("run dagml predict");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            predicted.push((
                m.to_string(),
                read_arrow(&std::fs::read(dest).expect("read")),
            ));
        }
        Trained { dir, predicted }
    })
}

fn python() -> Python {
    static PY: OnceLock<Result<Python, String>> = OnceLock::new();
    let need = Need {
        venv: "triton-venv",
        packages: &["tritonclient[http]", "numpy"],
        import: "import tritonclient.http, numpy",
        env: "DAGML_TEST_TRITON_PYTHON",
    };
    match PY.get_or_init(|| python::find(&need)) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// `dagml serve` both models, with `extra` arguments and `env`.
fn serve(procs: &mut Procs, extra: &[&str], env: &[(&str, &str)]) -> String {
    let t = trained();
    let (f, l) = (t.model("forest"), t.model("linear"));
    let mut args = vec!["serve", f.as_str(), l.as_str(), "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    procs.serve("serve", &args, env)
}

fn post_json(addr: &str, path: &str, v: &serde_json::Value) -> (u16, serde_json::Value) {
    let (status, _, body) = http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        v.to_string().as_bytes(),
    );
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// Run the tritonclient script against a server and return its predictions.
fn conformance(token: Option<&str>) -> serde_json::Value {
    let py = python();
    let mut procs = Procs::default();
    let env: Vec<(&str, &str)> = token.map(|t| ("DAGML_TOKEN", t)).into_iter().collect();
    let addr = serve(&mut procs, &[], &env);
    let out = tempfile::NamedTempFile::new().expect("temp");
    let mut cmd = py.command();
    cmd.arg(SCRIPT).arg(&addr).arg(TEST).arg(out.path());
    if let Some(t) = token {
        cmd.arg(t);
    }
    let ran = run_bounded(&mut cmd, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    drop(procs);
    assert!(ran.ok(), "the tritonclient script {}", ran.describe());
    assert!(ran.output.contains("all checks passed"), "{}", ran.output);
    serde_json::from_slice(&std::fs::read(out.path()).expect("read")).expect("JSON")
}

/// `got` (from JSON) equals `dagml predict`'s column, bit for bit, at `rows`.
fn assert_same(model: &str, what: &str, got: &serde_json::Value, rows: &[usize]) {
    let want = trained().predicted(model);
    let col = want
        .column_by_name(what)
        .unwrap_or_else(|| panic!("{model}: no {what}"));
    let got = got.as_array().expect("array");
    assert_eq!(got.len(), rows.len(), "{model} {what}");
    for (g, &r) in got.iter().zip(rows) {
        if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
            assert_eq!(g.as_str(), Some(s.value(r)), "{model} {what} row {r}");
        } else if let Some(f) = col.as_any().downcast_ref::<Float32Array>() {
            let g = g.as_f64().expect("number") as f32;
            assert_eq!(g.to_bits(), f.value(r).to_bits(), "{model} {what} row {r}");
        } else if let Some(f) = col.as_any().downcast_ref::<Float64Array>() {
            let g = g.as_f64().expect("number");
            assert_eq!(g.to_bits(), f.value(r).to_bits(), "{model} {what} row {r}");
        } else {
            panic!("{model} {what}: type {}", col.data_type());
        }
    }
}

fn check_against_predict(report: &serde_json::Value) {
    for m in MODELS {
        let r = &report[m];
        let outputs: &[&str] = if m == "forest" {
            &["prediction", "probability"]
        } else {
            &["prediction"]
        };
        let all: Vec<usize> = (0..200).collect();
        let json_rows: Vec<usize> = r["json_rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|v| v.as_u64().expect("row") as usize)
            .collect();
        assert!(
            json_rows.len() > 20,
            "{m}: {} rows without missing numbers",
            json_rows.len()
        );
        for o in outputs {
            assert_same(m, o, &r["binary"][o], &all);
            assert_same(m, o, &r["json"][o], &json_rows);
        }
    }
}

#[test]
fn tritonclient_reads_health_metadata_and_predictions_equal_to_dagml_predict() {
    check_against_predict(&conformance(None));
}

#[test]
fn tritonclient_needs_the_token_and_works_with_it() {
    check_against_predict(&conformance(Some("serve-s3cret")));
}

/// The forest's input rows as `dagml predict` read them (without its
/// prediction columns), in the order of the served model's inputs.
fn forest_inputs(addr: &str) -> RecordBatch {
    let want = trained().predicted("forest");
    let keep: Vec<usize> = (0..want.num_columns())
        .filter(|&i| {
            !["prediction", "probability"].contains(&want.schema().field(i).name().as_str())
        })
        .collect();
    let meta: serde_json::Value = {
        let (s, _, b) = http(addr, "GET", "/v2/models/forest", &[], b"");
        assert_eq!(s, 200);
        serde_json::from_slice(&b).expect("JSON")
    };
    let features: Vec<String> = meta["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_string())
        .collect();
    let input = want.project(&keep).expect("project");
    let idx: Vec<usize> = features
        .iter()
        .map(|f| input.schema().index_of(f).expect("feature in test.csv"))
        .collect();
    input.project(&idx).expect("project")
}

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut body = Vec::new();
    {
        let mut w =
            arrow::ipc::writer::StreamWriter::try_new(&mut body, &batch.schema()).expect("writer");
        w.write(batch).expect("write");
        w.finish().expect("finish");
    }
    body
}

/// POST rows as an Arrow body; the answer's prediction columns.
fn infer_arrow(addr: &str, rows: &RecordBatch) -> RecordBatch {
    let (status, head, got) = http(
        addr,
        "POST",
        "/v2/models/forest/infer",
        &[("Content-Type", "application/vnd.apache.arrow.stream")],
        &ipc(rows),
    );
    assert_eq!(status, 200, "{head} {}", String::from_utf8_lossy(&got));
    read_arrow(&got)
}

fn assert_rows_of_predict(got: &RecordBatch, offset: usize) {
    let want = trained().predicted("forest");
    let want = want.slice(offset, got.num_rows());
    for name in ["prediction", "probability"] {
        let g = got.column_by_name(name).expect("column").to_data();
        let w = want.column_by_name(name).expect("column").to_data();
        assert_eq!(
            g, w,
            "{name} of rows {offset}.. differs from dagml predict's"
        );
    }
}

#[test]
fn an_arrow_ipc_body_scores_in_bulk_with_the_same_predictions() {
    let mut procs = Procs::default();
    let addr = serve(&mut procs, &[], &[]);
    let input = forest_inputs(&addr);
    let got = infer_arrow(&addr, &input);
    assert_eq!(got.num_rows(), trained().predicted("forest").num_rows());
    assert_rows_of_predict(&got, 0);
}

/// Concurrent requests of different rows, from `clients` threads, each
/// checked against `dagml predict`'s answers for its rows; then the model's
/// statistics (the protocol's statistics extension).
fn concurrent_requests(addr: &str, rounds: usize, clients: usize) -> serde_json::Value {
    let input = forest_inputs(addr);
    let n = input.num_rows();
    std::thread::scope(|s| {
        for c in 0..clients {
            let input = &input;
            s.spawn(move || {
                for r in 0..rounds {
                    // Requests of 1 to 17 rows at different offsets.
                    let len = 1 + (c * 7 + r * 3) % 17;
                    let offset = (c * 131 + r * 57) % (n - len);
                    let got = infer_arrow(addr, &input.slice(offset, len));
                    assert_rows_of_predict(&got, offset);
                }
            });
        }
    });
    let (status, _, body) = http(addr, "GET", "/v2/models/forest/stats", &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let s = v["model_stats"][0].clone();
    assert_eq!(s["name"], "forest", "{v}");
    // Every request counted once, in exactly one execution.
    assert_eq!(s["inference_count"], (rounds * clients) as u64, "{v}");
    let batches = s["batch_stats"].as_array().expect("batch_stats");
    let requests: u64 = batches
        .iter()
        .map(|b| {
            b["batch_size"].as_u64().unwrap_or(0)
                * b["compute_infer"]["count"].as_u64().unwrap_or(0)
        })
        .sum();
    let executions: u64 = batches
        .iter()
        .map(|b| b["compute_infer"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(requests, (rounds * clients) as u64, "{v}");
    assert_eq!(s["execution_count"], executions, "{v}");
    s
}

#[test]
fn concurrent_requests_each_get_the_answers_of_their_own_rows_batched_or_not() {
    // 16 clients at once. Which requests share a call depends on timing (a
    // model file predicts in a few milliseconds, so few wait here; the shard
    // ensemble's broadcast is where they pile up, tests/serve_cluster.rs):
    // every answer is checked against predict's rows either way, and the
    // statistics count each request in exactly one call.
    let mut procs = Procs::default();
    let addr = serve(&mut procs, &[], &[]);
    let s = concurrent_requests(&addr, 8, 16);
    assert!(
        s["execution_count"].as_u64() <= s["inference_count"].as_u64(),
        "{s}"
    );
    // Batching off: one call per request.
    let mut procs = Procs::default();
    let addr = serve(&mut procs, &["--max-batch", "1"], &[]);
    let s = concurrent_requests(&addr, 4, 8);
    assert_eq!(s["execution_count"], s["inference_count"], "{s}");
}

fn infer_body(inputs: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "inputs": inputs })
}

/// A valid JSON request for `linear`, one row.
fn linear_inputs() -> serde_json::Value {
    serde_json::json!([
        {"name": "OverallQual", "shape": [1], "datatype": "INT64", "data": [7]},
        {"name": "OverallCond", "shape": [1], "datatype": "INT64", "data": [5]},
        {"name": "GrLivArea", "shape": [1], "datatype": "INT64", "data": [1700]},
        {"name": "LotFrontage", "shape": [1], "datatype": "FP64", "data": [null]},
        {"name": "FullBath", "shape": [1], "datatype": "INT64", "data": [2]}
    ])
}

#[test]
fn bad_requests_get_a_4xx_that_says_what_is_wrong() {
    let mut procs = Procs::default();
    let addr = serve(&mut procs, &["--max-body", "4096"], &[]);
    let path = "/v2/models/linear/infer";
    let (s, ok) = post_json(&addr, path, &infer_body(linear_inputs()));
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["outputs"][0]["name"], "prediction");

    let mut cases: Vec<(&str, serde_json::Value, u16, &str)> = Vec::new();
    let mut missing = linear_inputs();
    missing.as_array_mut().expect("array").pop();
    cases.push((
        "missing column",
        infer_body(missing),
        400,
        "has no column `FullBath`, which the model reads",
    ));
    let mut extra = linear_inputs();
    extra.as_array_mut().expect("array").push(
        serde_json::json!({"name": "Colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}),
    );
    cases.push(("extra column", infer_body(extra), 400, "no input `Colour`"));
    let mut text = linear_inputs();
    text[2] = serde_json::json!({"name": "GrLivArea", "shape": [1], "datatype": "BYTES", "data": ["big"]});
    cases.push((
        "text for a number",
        infer_body(text),
        400,
        "`GrLivArea` is BYTES",
    ));
    let mut fraction = linear_inputs();
    fraction[0] =
        serde_json::json!({"name": "OverallQual", "shape": [1], "datatype": "FP64", "data": [6.5]});
    cases.push((
        "a fraction for an integer",
        infer_body(fraction),
        400,
        "6.5 does not convert to Int64 without loss",
    ));
    let mut shape = linear_inputs();
    shape[0]["shape"] = serde_json::json!([1, 2]);
    cases.push(("a 2-D input", infer_body(shape), 400, "shape [1, 2]"));
    let mut count = linear_inputs();
    count[0]["shape"] = serde_json::json!([2]);
    cases.push((
        "shape and data disagree",
        infer_body(count),
        400,
        "its shape says 2",
    ));
    let mut dtype = linear_inputs();
    dtype[0]["datatype"] = serde_json::json!("FP128");
    cases.push((
        "an unknown datatype",
        infer_body(dtype),
        400,
        "the datatypes are BOOL",
    ));
    for (what, body, status, says) in cases {
        let (s, v) = post_json(&addr, path, &body);
        assert_eq!(s, status, "{what}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{what}: {msg:?} should say {says:?}");
    }

    let (s, v) = post_json(
        &addr,
        "/v2/models/linaer/infer",
        &infer_body(linear_inputs()),
    );
    assert_eq!(s, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("did you mean `linear`"),
        "{v}"
    );

    let (s, _, b) = http(
        &addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        b"{\"inputs\": [",
    );
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&b).contains("not a valid inference request"));

    let (s, _, b) = http(&addr, "POST", path, &[], &vec![b' '; 10_000]);
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("--max-body"));

    let (s, _, b) = http(
        &addr,
        "POST",
        path,
        &[("Inference-Header-Content-Length", "99999")],
        b"{}",
    );
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));

    let (s, _, _) = http(&addr, "GET", "/v3/nothing", &[], b"");
    assert_eq!(s, 404);
    // The server is still up and answering.
    let (s, _, _) = http(&addr, "GET", "/v2/health/ready", &[], b"");
    assert_eq!(s, 200);
}

#[test]
fn with_a_token_only_health_answers_without_it() {
    let mut procs = Procs::default();
    let addr = serve(&mut procs, &[], &[("DAGML_TOKEN", "t0ken")]);
    assert_eq!(http(&addr, "GET", "/v2/health/live", &[], b"").0, 200);
    let (s, _, b) = http(&addr, "GET", "/v2/models/linear", &[], b"");
    assert_eq!(s, 401, "{}", String::from_utf8_lossy(&b));
    let (s, _, _) = http(
        &addr,
        "GET",
        "/v2/models/linear",
        &[("Authorization", "Bearer wrong")],
        b"",
    );
    assert_eq!(s, 401);
    let (s, _, _) = http(
        &addr,
        "GET",
        "/v2/models/linear",
        &[("Authorization", "Bearer t0ken")],
        b"",
    );
    assert_eq!(s, 200);
}

#[test]
fn two_model_files_of_one_name_are_refused_at_start() {
    let t = trained();
    let f = t.model("forest");
    let out = common::dagml(None)
        .args(["serve", &f, &f, "--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("both named `forest`") && err.contains("NAME=PATH"),
        "{err}"
    );
    let bogus: PathBuf = t.dir.path().join("pipeline.toml");
    let out = common::dagml(None)
        .args(["serve"])
        .arg(&bogus)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    // A pipeline file is trained and served from its workers, which needs
    // a per-shard model: without one, the message says to serve the model
    // file.
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no per-shard model") && err.contains("dagml serve MODEL_FILE"),
        "{err}"
    );
    let _: &Path = bogus.as_path();
}

#[test]
fn over_tls_it_answers_https_and_refuses_plain_http() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("generate a certificate");
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let (c, k) = (cert.to_string_lossy(), key.to_string_lossy());
    let mut procs = Procs::default();
    let addr = serve(
        &mut procs,
        &[],
        &[("DAGML_TLS_CERT", &c), ("DAGML_TLS_KEY", &k)],
    );

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ck.cert.der().clone())
        .expect("trust the certificate");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).expect("client");
    let tcp = TcpStream::connect(&addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET /v2/models/linear HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("write");
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("\"name\":\"linear\""), "{got}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let _ = s.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut plain = Vec::new();
    let _ = s.read_to_end(&mut plain);
    assert!(
        !plain.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&plain)
    );
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits() {
    let mut procs = Procs::default();
    let addr = serve(&mut procs, &[], &[]);
    let body = infer_body(linear_inputs()).to_string().into_bytes();
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST /v2/models/linear/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // Headers and half the body, then SIGTERM, then the rest.
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(&body[..body.len() / 2]).expect("write");
    std::thread::sleep(Duration::from_millis(300));
    let pid = procs.pid("serve").expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&body[body.len() / 2..])
        .expect("write the rest");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "the request in flight was dropped: {got:?}"
    );
    assert!(got.contains("\"prediction\""), "{got}");
    // Then it exits by itself, with success.
    let child = &mut procs
        .0
        .iter_mut()
        .find(|(n, _)| n == "serve")
        .expect("serve")
        .1;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // New connections are refused now.
    assert!(TcpStream::connect(&addr).is_err());
}
