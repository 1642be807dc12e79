//! The model file: a versioned, self-describing container for a fitted model.
//!
//! Layout (all integers little-endian):
//! ```text
//! 8 bytes   magic "DAGMLMDL"
//! u32       format version (FORMAT_VERSION)
//! u32       header length H
//! H bytes   header, JSON (ModelHeader): pipeline name and hash, model name,
//!           estimator, task, target, feature names and types, class labels,
//!           fitted preprocessing, parameters
//! u64       payload length P
//! P bytes   payload: the estimator's own encoding (postcard of its serde form)
//! ```
//! In: a header and payload bytes. Out: bytes, and back, with typed errors for a
//! file that is not a model, is truncated, or comes from a newer format.
//! Must not: contain anything that varies between runs (no timestamps, no host
//! names): the same pipeline and seed give byte-identical files.

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"DAGMLMDL";
/// 2: trees carry their feature importances (the payload of version 1 has none
/// and cannot be read as version 2).
pub const FORMAT_VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureInfo {
    pub name: String,
    /// Arrow-style type name of the column the model reads.
    pub dtype: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    pub format_version: u32,
    pub dagml_version: String,
    pub pipeline: String,
    /// SHA-256 of the pipeline file's text, hex.
    pub pipeline_hash: String,
    pub model: String,
    pub estimator: String,
    pub task: String,
    pub target: String,
    pub features: Vec<FeatureInfo>,
    /// Class labels in index order (classification), as text.
    pub classes: Vec<String>,
    /// Fitted preprocessing applied before the estimator (serde JSON of the data layer's form).
    pub preprocess: serde_json::Value,
    /// The estimator's parameters, for reference.
    pub params: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("not a dagml model file (bad magic)")]
    NotAModel,
    #[error("the model file is truncated: {0}")]
    Truncated(&'static str),
    #[error(
        "the model file has format version {0}; this dagml reads up to {FORMAT_VERSION}: upgrade dagml"
    )]
    TooNew(u32),
    #[error(
        "the model file has format version {0}, older than this dagml's {FORMAT_VERSION} (trees now store feature importances): re-run the pipeline to rewrite it"
    )]
    TooOld(u32),
    #[error("the model header is not valid: {0}")]
    Header(String),
    #[error("the model payload is not valid: {0}")]
    Payload(String),
}

pub fn encode(header: &ModelHeader, payload: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(24 + h.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn take<'a>(b: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], ModelFileError> {
    if b.len() < n {
        return Err(ModelFileError::Truncated(what));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

/// Header and payload of a model file's bytes.
pub fn decode(bytes: &[u8]) -> Result<(ModelHeader, &[u8]), ModelFileError> {
    let mut b = bytes;
    if take(&mut b, 8, "magic").map_err(|_| ModelFileError::NotAModel)? != MAGIC {
        return Err(ModelFileError::NotAModel);
    }
    let v = u32::from_le_bytes(
        take(&mut b, 4, "version")?
            .try_into()
            .map_err(|_| ModelFileError::Truncated("version"))?,
    );
    if v > FORMAT_VERSION {
        return Err(ModelFileError::TooNew(v));
    }
    if v < FORMAT_VERSION {
        return Err(ModelFileError::TooOld(v));
    }
    let hl = u32::from_le_bytes(
        take(&mut b, 4, "header length")?
            .try_into()
            .map_err(|_| ModelFileError::Truncated("header length"))?,
    ) as usize;
    let header: ModelHeader = serde_json::from_slice(take(&mut b, hl, "header")?)
        .map_err(|e| ModelFileError::Header(e.to_string()))?;
    let pl = u64::from_le_bytes(
        take(&mut b, 8, "payload length")?
            .try_into()
            .map_err(|_| ModelFileError::Truncated("payload length"))?,
    );
    let payload = take(
        &mut b,
        usize::try_from(pl).map_err(|_| ModelFileError::Truncated("payload"))?,
        "payload",
    )?;
    Ok((header, payload))
}

/// SHA-256 of text, as lowercase hex.
pub fn hash_hex(text: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ModelHeader {
        ModelHeader {
            format_version: FORMAT_VERSION,
            dagml_version: "0.1.0".into(),
            pipeline: "p".into(),
            pipeline_hash: hash_hex(b"text"),
            model: "m".into(),
            estimator: "ridge".into(),
            task: "regression".into(),
            target: "y".into(),
            features: vec![FeatureInfo {
                name: "a".into(),
                dtype: "Float64".into(),
            }],
            classes: vec![],
            preprocess: serde_json::Value::Null,
            params: serde_json::json!({"alpha": 1.0}),
        }
    }

    #[test]
    fn round_trip_and_errors() {
        let bytes = encode(&header(), b"payload");
        let (h, p) = decode(&bytes).unwrap();
        assert_eq!((h, p), (header(), &b"payload"[..]));
        assert!(matches!(
            decode(b"PK\x03\x04zip"),
            Err(ModelFileError::NotAModel)
        ));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3]),
            Err(ModelFileError::Truncated("payload"))
        ));
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert!(matches!(decode(&newer), Err(ModelFileError::TooNew(9))));
        let mut older = bytes.clone();
        older[8] = 1;
        let e = decode(&older).unwrap_err();
        assert!(matches!(e, ModelFileError::TooOld(1)));
        assert!(e.to_string().contains("re-run the pipeline"), "{e}");
        assert_eq!(
            hash_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
