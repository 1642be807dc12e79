//! Plain HTTP/1.1 exchanges and Arrow IPC bodies for the serving and
//! dashboard tests: one connection per request, a bounded read.

use arrow::record_batch::RecordBatch;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The batches of an Arrow IPC stream (or file), as one batch.
pub fn read_arrow(bytes: &[u8]) -> RecordBatch {
    let cursor = || std::io::Cursor::new(bytes);
    let batches: Vec<RecordBatch> = match arrow::ipc::reader::StreamReader::try_new(cursor(), None)
    {
        Ok(r) => r.collect::<Result<_, _>>().expect("batches"),
        Err(_) => arrow::ipc::reader::FileReader::try_new(cursor(), None)
            .expect("an Arrow file or stream")
            .collect::<Result<_, _>>()
            .expect("batches"),
    };
    arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
}

/// An HTTP/1.1 exchange over a fresh connection: (status, headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // A server may answer (413) before it reads the whole body and close.
    let _ = s.write_all(&bytes);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let split = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&got)));
    let head = String::from_utf8_lossy(&got[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let mut body = got[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..end]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < end + 2 + n {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + n]);
        b = &b[(end + 4 + n).min(b.len())..];
    }
}
