//! Where work runs and what time it is: the wall clock in Unix milliseconds, and a way to wait
//! on the store without stalling the request path.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `f`, which waits on the store (an SQLite commit that may queue behind the log writer's,
/// a PostgreSQL round trip), without stalling the data plane: on a multi-threaded runtime the
/// calling worker first hands its queued requests to another worker
/// (`tokio::task::block_in_place`). Elsewhere (a current-thread runtime, as in most tests)
/// `f` simply runs.
pub fn off_the_request_path<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
