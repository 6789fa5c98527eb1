//! The binary's tests, one test binary: `switchyard` run as a process (CLI, demo, kill -9,
//! replicas on PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin_cli;
mod check;
mod crash;
mod demo;
mod replay_cli;
mod replicas;
mod stats_cli;
mod tls;
