//! AWS wire protocols as trailwatch speaks them (`spec/protocols.md`).
//!
//! A request travels: [`classify`] (which service, protocol and operation) →
//! [`sigv4`] verification over the raw bytes → [`body`] decoding (gzip, then the
//! protocol codec) into a neutral [`Value`] tree → handler → [`render`] of the
//! output or [`ApiError`] in the request's protocol.
//!
//! S3's REST-XML facade has its own helpers in [`s3`]: its operation comes
//! from method, path and query, and its bodies are written by its handler.
//!
//! Main types: [`Service`], [`Protocol`], [`Route`], [`Value`], [`ApiError`].
//!
//! Invariants: this crate performs no IO and keeps no state; every decoder
//! rejects malformed bytes with an error and never panics (fuzzed and
//! property-tested); the response protocol always equals the request protocol.

pub mod body;
pub mod cbor;
pub mod classify;
pub mod error;
pub mod eventstream;
pub mod json;
pub mod query;
pub mod render;
pub mod s3;
pub mod service;
pub mod sigv4;
pub mod value;
pub mod xml;

pub use classify::{classify, ClassifyError, RequestHead, Route};
pub use error::{ApiError, Fault};
pub use service::{Protocol, Service};
pub use value::Value;
