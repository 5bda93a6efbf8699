//! Integration tests of the server crate, in process (one test binary).
#![allow(clippy::unwrap_used)] // test helpers fail loudly by design

mod alarm_engine;
mod golden;
mod s3;
mod support;
mod trails;
