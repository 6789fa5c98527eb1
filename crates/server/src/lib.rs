//! The gateway (data plane, backends, shadow dispatch, metrics); being built.
