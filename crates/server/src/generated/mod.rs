//! Code generated from AWS service models; regenerate, never edit.

pub(crate) mod operations;
