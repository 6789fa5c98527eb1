//! The one error type of the statistics engine.

/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// An argument is out of its domain. `field` is the argument's name in snake_case, so a
    /// caller (the CLI) can map it back to the flag the user typed.
    #[error("{field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// The inputs are valid but the statistic is undefined for them (zero variance, too few
    /// observations); the caller should wait for more data rather than report a number.
    #[error("undefined: {0}")]
    Undefined(String),
}

impl StatsError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StatsError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// The argument name an [`StatsError::InvalidInput`] refers to.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            StatsError::InvalidInput { field, .. } => Some(field),
            StatsError::Undefined(_) => None,
        }
    }
}
