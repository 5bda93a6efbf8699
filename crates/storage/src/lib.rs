//! Durable storage for trailwatch. Today: the write-ahead log ([`wal`]), through
//! which every acknowledged write passes before its 2xx.
//!
//! This crate never names an AWS concept: it stores opaque payloads with
//! sequence numbers. It must not depend on `trailwatch-protocol`.

pub mod wal;

pub use wal::{Recovery, TornTail, Wal, WalError, WalOptions};
