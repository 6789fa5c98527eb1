//! Subcommands of the `switchyard` binary.

pub mod admin;
pub mod demo;
pub mod replay;
pub mod serve;
pub mod stats;
pub mod token;

/// Bad input from the user: reported with the flag it concerns, exit code 2 (as clap's own
/// usage errors).
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct InputError {
    pub flag: String,
    pub reason: String,
}

impl InputError {
    pub fn new(flag: impl Into<String>, reason: impl Into<String>) -> Self {
        InputError {
            flag: flag.into(),
            reason: reason.into(),
        }
    }
}
