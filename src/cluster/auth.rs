//! The shared secret and TLS: when `DAGML_TOKEN` is set, every gRPC and Flight
//! call must carry `authorization: Bearer <token>`; calls without it are refused
//! with `Unauthenticated`. Tokens are compared in constant time. With a
//! certificate and key (`DAGML_TLS_CERT`, `DAGML_TLS_KEY`) servers speak TLS
//! (rustls); with a CA (`DAGML_TLS_CA`) clients dial `https://` and trust it.
//!
//! In: the token and TLS files (from the environment, once at start) and each
//! call's metadata. Out: the call, or `Status::unauthenticated`; channels to
//! peers, with a connect timeout and HTTP/2 keepalive (a silent peer fails
//! the calls to it in bounded time). Must not: log the token.

use super::ClusterError;
use std::path::PathBuf;
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

pub const TOKEN_ENV: &str = "DAGML_TOKEN";
pub const TLS_CERT_ENV: &str = "DAGML_TLS_CERT";
pub const TLS_KEY_ENV: &str = "DAGML_TLS_KEY";
pub const TLS_CA_ENV: &str = "DAGML_TLS_CA";

/// PEM files for TLS. A server needs `cert` and `key`; a client needs `ca`
/// (the certificate that signed the servers', or a server's own when it is
/// self-signed). Workers and the scheduler are both, so they take all three.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

fn read_pem(what: &str, p: &PathBuf) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(p).map_err(|e| {
        ClusterError::Other(format!("cannot read the TLS {what} `{}`: {e}", p.display()))
    })
}

impl Tls {
    /// From `DAGML_TLS_CERT`, `DAGML_TLS_KEY` and `DAGML_TLS_CA` (unset or empty: none).
    pub fn from_env() -> Tls {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Tls {
            cert: var(TLS_CERT_ENV),
            key: var(TLS_KEY_ENV),
            ca: var(TLS_CA_ENV),
        }
    }

    /// The server's TLS settings, or `None` for plain TCP.
    pub fn server(&self) -> Result<Option<ServerTlsConfig>, ClusterError> {
        match (&self.cert, &self.key) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => {
                let id = Identity::from_pem(read_pem("certificate", c)?, read_pem("key", k)?);
                Ok(Some(ServerTlsConfig::new().identity(id)))
            }
            _ => Err(ClusterError::Other(format!(
                "TLS needs both a certificate ({TLS_CERT_ENV}) and a key ({TLS_KEY_ENV})"
            ))),
        }
    }

    /// The client's TLS settings, or `None` for plain TCP.
    pub fn client(&self) -> Result<Option<ClientTlsConfig>, ClusterError> {
        match &self.ca {
            None if self.cert.is_some() => Err(ClusterError::Other(format!(
                "TLS is on ({TLS_CERT_ENV} is set) but no CA to trust: set {TLS_CA_ENV}"
            ))),
            None => Ok(None),
            Some(ca) => Ok(Some(
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem("CA", ca)?)),
            )),
        }
    }
}

/// The token from `DAGML_TOKEN`, if set and not empty.
pub fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())
}

/// A fresh random token (256 bits, hex) for a cluster whose only client is this
/// process: from the OS's random source, or, where there is no
/// `/dev/urandom`, from std's randomly keyed hashers (128 bits of OS entropy).
pub fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_os.is_err() {
        use std::hash::{BuildHasher, Hasher};
        let keyed = std::collections::hash_map::RandomState::new();
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = keyed.build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the token `expected`, in constant time (for servers
/// other than gRPC's: the dashboard).
pub fn same_token(given: &[u8], expected: &[u8]) -> bool {
    bool::from(given.ct_eq(expected))
}

/// Whether an `Authorization` header's value is `Bearer TOKEN` for the token
/// `expected` (in constant time): the HTTP servers' check (model serving and
/// the dashboard), as [`Check`] is gRPC's.
pub fn bearer_is(authorization: Option<&str>, expected: &str) -> bool {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_token(given.as_bytes(), expected.as_bytes()))
}

/// Server side: refuses calls without the token (lets everything through when
/// no token is configured).
#[derive(Clone)]
pub struct Check {
    expected: Option<Vec<u8>>,
}

impl Check {
    pub fn new(token: Option<&str>) -> Self {
        Check {
            expected: token.map(|t| format!("Bearer {t}").into_bytes()),
        }
    }
}

impl Interceptor for Check {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if bool::from(given.ct_eq(expected.as_slice())) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong token (set DAGML_TOKEN to the cluster's token)",
            ))
        }
    }
}

/// Client side: attaches the token to every call, and dials with TLS when a CA
/// is given.
#[derive(Clone)]
pub struct Attach {
    value: Option<MetadataValue<Ascii>>,
    tls: Option<ClientTlsConfig>,
}

impl Attach {
    pub fn new(token: Option<&str>, tls: &Tls) -> Result<Self, ClusterError> {
        let value =
            match token {
                Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                    ClusterError::Other("DAGML_TOKEN must be printable ASCII".into())
                })?),
                None => None,
            };
        Ok(Attach {
            value,
            tls: tls.client()?,
        })
    }

    /// A lazily connecting channel to `addr` (host:port), over TLS when on,
    /// that notices a silent peer: a TCP connect fails after
    /// [`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT), and an HTTP/2 ping goes out
    /// after [`KEEPALIVE_INTERVAL`](super::KEEPALIVE_INTERVAL) without news
    /// (idle or not); one unanswered for
    /// [`KEEPALIVE_TIMEOUT`](super::KEEPALIVE_TIMEOUT) closes the connection
    /// and fails every call on it.
    pub fn channel(&self, addr: &str) -> Result<Channel, ClusterError> {
        let uri = super::addr::uri(addr, self.tls.is_some())?;
        let mut ep = Channel::from_shared(uri)
            .map_err(|e| ClusterError::Address(addr.into(), e.to_string()))?
            .connect_timeout(super::CONNECT_TIMEOUT)
            .http2_keep_alive_interval(super::KEEPALIVE_INTERVAL)
            .keep_alive_timeout(super::KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(super::STREAM_WINDOW)
            .initial_connection_window_size(super::CONNECTION_WINDOW);
        if let Some(t) = &self.tls {
            ep = ep
                .tls_config(t.clone())
                .map_err(|e| ClusterError::Address(addr.into(), e.to_string()))?;
        }
        Ok(ep.connect_lazy())
    }
}

impl Interceptor for Attach {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_without_the_token_and_accepts_with_it() {
        let mut check = Check::new(Some("s3cret"));
        assert_eq!(
            check.call(Request::new(())).err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
        let mut wrong = Attach::new(Some("nope"), &Tls::default()).unwrap();
        let req = wrong.call(Request::new(())).unwrap();
        assert!(check.call(req).is_err());
        let mut right = Attach::new(Some("s3cret"), &Tls::default()).unwrap();
        let req = right.call(Request::new(())).unwrap();
        assert!(check.call(req).is_ok());
        assert!(Check::new(None).call(Request::new(())).is_ok());
    }

    #[test]
    fn random_tokens_are_long_printable_and_differ() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(Attach::new(Some(&a), &Tls::default()).is_ok());
    }
}
