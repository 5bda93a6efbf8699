//! The HTTP edge of trailwatch: one listener for every service and protocol.
//!
//! [`App`] holds the shared state (clock, keys, stores); [`edge`] runs the request
//! pipeline (classify → verify → decode → dispatch → render → record);
//! [`evaluator`] runs the alarm evaluation loop; [`delivery`] writes trail log and digest files; [`services`] holds one module per AWS service that maps wire values to domain
//! calls and domain errors to AWS codes.
//!
//! Invariants: every request that names a service leaves exactly one audit
//! record, appended before the answer is sent; if it cannot be appended the
//! caller gets a 500 instead of the answer. Handlers never touch storage
//! directly, only core services.

pub mod app;
pub mod archive;
pub mod delivery;
pub mod edge;
pub mod evaluator;
mod generated;
pub mod services;

pub use app::{App, AppConfig};
pub use edge::{handle, router, IncomingRequest, OutgoingResponse};
