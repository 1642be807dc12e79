//! The control plane's gRPC types and services, generated at build time from
//! proto/dagml.proto (protox + tonic-prost-build: no `protoc` needed).
//!
//! In/out: prost messages. Must not: hold hand-written logic.

#![allow(clippy::all, missing_docs)]
tonic::include_proto!("dagml.v1");
