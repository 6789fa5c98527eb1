//! The behaviour of switchyard, without I/O.
//!
//! Routing decisions, prediction records and their aggregates, and configuration validation
//! live here as plain data and pure functions: no sockets, no files, no clock (time is passed
//! in as milliseconds since the Unix epoch), no async. The server crate wires them to the
//! world; this crate is where behaviour is property-tested.

pub mod access;
pub mod aggregate;
pub mod audit;
pub mod classes;
pub mod config;
pub mod paired;
pub mod provenance;
pub mod record;
pub mod rollout;
pub mod rollout_config;
pub mod routing;
pub mod segments;

/// A map keyed by a model or version name, looked up on every request: foldhash instead of
/// the standard SipHash, which cost ~150 instructions per lookup of a short name (the keys
/// come from the configuration, so there is nothing for a client to collide).
pub type NameMap<V> = std::collections::HashMap<String, V, foldhash::fast::RandomState>;

pub use aggregate::{Aggregates, PairKey, PairStats, SeriesKey, VariantStats};
pub use record::{Feedback, Outcome, PairRef, Prediction, PredictionRecord, Role, Truth};
pub use routing::{Decision, ModelRoute, RoutingTable, Strategy};
