//! Where the controller's "now" comes from: wall-clock time, a clock moved by hand (tests) and
//! one that runs faster than real time (the demo).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

/// Where the controller's "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// Wall-clock time.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::runtime::now_ms()
    }
}

/// A clock moved by hand (tests).
#[derive(Debug, Default)]
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Wall-clock time running `scale` times faster than real time from its creation (the demo
/// compresses minutes into seconds this way).
#[derive(Debug)]
pub struct ScaledClock {
    origin_ms: i64,
    started: Instant,
    scale: f64,
}

impl ScaledClock {
    pub fn new(scale: f64) -> Self {
        ScaledClock {
            origin_ms: crate::runtime::now_ms(),
            started: Instant::now(),
            scale: scale.max(1.0),
        }
    }
}

impl Clock for ScaledClock {
    fn now_ms(&self) -> i64 {
        self.origin_ms + (self.started.elapsed().as_secs_f64() * 1000.0 * self.scale) as i64
    }
}
