//! Addresses as users write them: `host:port`, optionally with `http://`,
//! `https://` or `tcp://` in front.
//!
//! In: a string from the command line or a registration. Out: a `host:port`
//! to bind or dial and the URI tonic dials. Must not: resolve names or connect.

use super::ClusterError;

/// Default listen address: loopback only, a free port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// `host:port` without any scheme; a bare `:port` means 127.0.0.1.
pub fn host_port(s: &str) -> Result<String, ClusterError> {
    let t = s.trim();
    let rest = ["http://", "https://", "tcp://"]
        .iter()
        .find_map(|p| t.strip_prefix(p))
        .unwrap_or(t);
    let rest = rest.trim_end_matches('/');
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(ClusterError::Address(
            s.into(),
            "expected host:port, e.g. 127.0.0.1:7070".into(),
        ));
    };
    port.parse::<u16>()
        .map_err(|_| ClusterError::Address(s.into(), format!("`{port}` is not a port number")))?;
    if rest.contains('/') {
        return Err(ClusterError::Address(s.into(), "unexpected path".into()));
    }
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok(format!("{host}:{port}"))
}

/// The URI to dial: `http://host:port`, or `https://` when TLS is on.
pub fn uri(s: &str, tls: bool) -> Result<String, ClusterError> {
    let hp = host_port(s)?;
    Ok(format!("{}://{hp}", if tls { "https" } else { "http" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_accepted_and_stripped() {
        for s in [
            "127.0.0.1:7070",
            "http://127.0.0.1:7070",
            "tcp://127.0.0.1:7070/",
        ] {
            assert_eq!(host_port(s).unwrap(), "127.0.0.1:7070");
        }
        assert_eq!(host_port(":9").unwrap(), "127.0.0.1:9");
        assert_eq!(uri("tcp://h:1", false).unwrap(), "http://h:1");
        assert!(host_port("localhost").is_err());
        assert!(host_port("h:99999").is_err());
        assert!(host_port("h:1/x").is_err());
    }
}
