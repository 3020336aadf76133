//! A circuit breaker per cloud backend: it opens after `failures`
//! consecutive failures, or when at least `min_requests` calls in the
//! current `window_secs` failed `ratio` of the time or more; while open,
//! calls are refused at once (dispatch goes straight to the fallback, no
//! timeout waited for); after `open_secs` one probe is let through
//! (half-open): success closes it, failure opens it again.

use crate::config::BreakerConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// 0 closed, 1 open, 2 half-open (the metric's value).
    pub fn code(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

struct Inner {
    state: State,
    consecutive: u32,
    window_start: Instant,
    calls: u32,
    failed: u32,
    opened_at: Instant,
    probing: bool,
}

pub struct Breaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Breaker {
        let now = Instant::now();
        Breaker {
            cfg,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive: 0,
                window_start: now,
                calls: 0,
                failed: 0,
                opened_at: now,
                probing: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now (an open breaker past its time reads half-open).
    pub fn state(&self) -> State {
        let g = self.lock();
        if g.state == State::Open
            && g.opened_at.elapsed() >= Duration::from_secs(self.cfg.open_secs)
        {
            State::HalfOpen
        } else {
            g.state
        }
    }

    /// May a call go through now? In half-open, only one probe at a time.
    pub fn allow(&self) -> bool {
        let mut g = self.lock();
        match g.state {
            State::Closed => true,
            State::Open if g.opened_at.elapsed() < Duration::from_secs(self.cfg.open_secs) => false,
            State::Open | State::HalfOpen => {
                if g.probing {
                    return false;
                }
                g.state = State::HalfOpen;
                g.probing = true;
                true
            }
        }
    }

    /// A call `allow` let through ended without an outcome (the client
    /// left): a half-open breaker lets the next probe through.
    pub fn abandon(&self) {
        let mut g = self.lock();
        if g.state == State::HalfOpen {
            g.probing = false;
        }
    }

    /// The outcome of a call that `allow` let through.
    pub fn record(&self, ok: bool) {
        let mut g = self.lock();
        let now = Instant::now();
        if now.duration_since(g.window_start) >= Duration::from_secs(self.cfg.window_secs) {
            g.window_start = now;
            g.calls = 0;
            g.failed = 0;
        }
        g.calls += 1;
        if ok {
            g.consecutive = 0;
            if g.state == State::HalfOpen {
                g.state = State::Closed;
                g.probing = false;
                g.calls = 0;
                g.failed = 0;
            }
            return;
        }
        g.failed += 1;
        g.consecutive += 1;
        let ratio_trips = g.calls >= self.cfg.min_requests
            && f64::from(g.failed) / f64::from(g.calls) >= self.cfg.ratio;
        if g.state == State::HalfOpen || g.consecutive >= self.cfg.failures || ratio_trips {
            g.state = State::Open;
            g.opened_at = now;
            g.probing = false;
        }
    }
}

/// A call `allow` let through, until its outcome is recorded: dropped
/// before that (the request's future dropped with its client), it gives
/// the half-open probe back, so the breaker cannot stay stuck half-open.
pub struct Pending<'a>(Option<&'a Breaker>);

impl<'a> Pending<'a> {
    pub fn new(b: &'a Breaker) -> Self {
        Pending(Some(b))
    }
    pub fn record(mut self, ok: bool) {
        if let Some(b) = self.0.take() {
            b.record(ok);
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(open_ms: u64) -> BreakerConfig {
        BreakerConfig {
            failures: 3,
            ratio: 0.5,
            min_requests: 10,
            window_secs: 60,
            open_secs: open_ms / 1000,
        }
    }

    #[test]
    fn opens_probes_and_closes() {
        let b = Breaker::new(cfg(0));
        for _ in 0..2 {
            assert!(b.allow());
            b.record(false);
        }
        assert_eq!(b.state(), State::Closed);
        assert!(b.allow());
        b.record(false);
        // open_secs 0: straight to half-open, one probe at a time.
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.allow());
        assert!(!b.allow(), "one probe at a time");
        b.record(false);
        assert!(b.allow(), "reopened, probe again");
        b.record(true);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn an_abandoned_probe_is_given_back() {
        let b = Breaker::new(cfg(0));
        for _ in 0..3 {
            assert!(b.allow());
            b.record(false);
        }
        assert!(b.allow(), "the probe");
        drop(Pending::new(&b)); // its client left mid-call
        assert!(b.allow(), "another probe may go");
        Pending::new(&b).record(true);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_failure_ratio_opens_it_too() {
        let b = Breaker::new(BreakerConfig {
            open_secs: 60,
            ..cfg(0)
        });
        for i in 0..10 {
            assert!(b.allow());
            b.record(i % 2 == 0); // never 3 in a row, but half fail
        }
        assert_eq!(b.state(), State::Open);
        assert!(!b.allow(), "open: refused at once");
    }
}
