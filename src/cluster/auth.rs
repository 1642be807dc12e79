//! The shared secret: when `DAGML_TOKEN` is set, every gRPC and Flight call must
//! carry `authorization: Bearer <token>`; calls without it are refused with
//! `Unauthenticated`. Tokens are compared in constant time.
//!
//! In: the token (from the environment, once at start) and each call's metadata.
//! Out: the call, or `Status::unauthenticated`. Must not: log the token.

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

pub const TOKEN_ENV: &str = "DAGML_TOKEN";

/// The token from `DAGML_TOKEN`, if set and not empty.
pub fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())
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

/// Client side: attaches the token to every call.
#[derive(Clone)]
pub struct Attach {
    value: Option<MetadataValue<Ascii>>,
}

impl Attach {
    pub fn new(token: Option<&str>) -> Result<Self, super::ClusterError> {
        let value = match token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                super::ClusterError::Other("DAGML_TOKEN must be printable ASCII".into())
            })?),
            None => None,
        };
        Ok(Attach { value })
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
        let mut wrong = Attach::new(Some("nope")).unwrap();
        let req = wrong.call(Request::new(())).unwrap();
        assert!(check.call(req).is_err());
        let mut right = Attach::new(Some("s3cret")).unwrap();
        let req = right.call(Request::new(())).unwrap();
        assert!(check.call(req).is_ok());
        assert!(Check::new(None).call(Request::new(())).is_ok());
    }
}
