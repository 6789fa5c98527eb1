//! The store's tests against real SQLite files and a real PostgreSQL, one test binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

mod cluster;
mod control;
mod log_writer;
