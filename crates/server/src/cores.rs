//! The data plane's threads (`runtime.data_plane_threads`): client connections are served on
//! `n` threads of their own, each running a current-thread tokio runtime and holding its own
//! pool of connections to `http://` backends. A request is read, routed, forwarded and answered
//! on one thread: no work stealing, no wake-up of another thread to reach a backend connection
//! that a different worker opened. The accept loop hands each new connection to the next thread
//! in turn (so connections are spread evenly, unlike `SO_REUSEPORT`'s hash), and everything that
//! is not the inference hot path (admin, UI, feedback, gRPC, the controller, shadows) stays on
//! the process's multi-threaded runtime. BENCHMARKS.md ("Proxy cost") has the measurements.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running data-plane threads; dropping it lets them end once idle.
#[derive(Debug)]
pub struct DataPlaneThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DataPlaneThreads {
    /// Starts `n` (at least one) threads, each with its runtime and its backend pool.
    pub fn start(n: usize) -> std::io::Result<DataPlaneThreads> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-data-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    crate::conn_pool::install();
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    // Serves the connections spawned onto it until told to stop (or until
                    // the gateway is dropped); connections still open then are closed.
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                })?;
            let handle = handle_rx.recv().map_err(|_| {
                std::io::Error::other(format!("data-plane thread {i} ended before starting"))
            })??;
            handles.push(handle);
            stops.push(stop_tx);
            threads.push(thread);
        }
        Ok(DataPlaneThreads {
            handles,
            next: AtomicUsize::new(0),
            stops,
            threads,
        })
    }

    /// Runs `connection` (one client connection's whole life) on the next thread in turn.
    pub fn spawn<F>(&self, connection: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(connection);
    }

    /// Ends the threads (after the accept loop's graceful shutdown has finished their
    /// connections) and waits for them.
    pub fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a data-plane thread panicked");
            }
        }
    }
}

/// The number of data-plane threads when the configuration does not say: one per tokio worker
/// the process would have (`TOKIO_WORKER_THREADS`, else the available cores).
pub fn default_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_each_thread_in_turn_and_stop_joins_them() {
        let threads = DataPlaneThreads::start(3).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..6 {
            let tx = tx.clone();
            threads.spawn(async move {
                tx.send(std::thread::current().name().map(str::to_string))
                    .unwrap();
            });
        }
        let mut names: Vec<_> = (0..6).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "switchyard-data-0",
                "switchyard-data-0",
                "switchyard-data-1",
                "switchyard-data-1",
                "switchyard-data-2",
                "switchyard-data-2"
            ]
        );
        threads.stop();
    }
}
