//! Load shedding: a concurrency limit per cloud backend. A request that
//! finds its backend at the limit is refused at once (dispatch moves to the
//! fallback, or answers 503 with `Retry-After`) instead of queueing behind
//! a slow upstream; a permit is held until the answer is complete, so a
//! stream counts until its last event or until the client leaves.

use super::{BackendReply, ReplyBody};
use futures::StreamExt;
use prometheus::IntGauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Limit {
    max: usize,
    in_flight: AtomicUsize,
    /// `slmgate_backend_in_flight{backend}`, shared by the limits an old and
    /// a reloaded policy hold for the same backend (both count).
    gauge: IntGauge,
}

/// One request's place under a limit, given back when dropped.
pub struct Permit(Arc<Limit>);

impl Limit {
    pub fn new(max: usize, gauge: IntGauge) -> Arc<Limit> {
        Arc::new(Limit {
            max,
            in_flight: AtomicUsize::new(0),
            gauge,
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit, or `None` when `max` requests are already in flight.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.gauge.inc();
        Some(Permit(self.clone()))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

impl Permit {
    /// Keep the permit until `reply` is done: at once for a whole answer
    /// (already read), with the stream for a streamed one.
    pub fn hold(self, mut reply: BackendReply) -> BackendReply {
        if let ReplyBody::Stream { events, .. } = &mut reply.body {
            let inner = std::mem::replace(events, futures::stream::empty().boxed());
            *events = inner
                .map(move |item| {
                    let _held = &self;
                    item
                })
                .boxed();
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_gives_back_on_drop() {
        let gauge = IntGauge::new("g", "g").unwrap();
        let l = Limit::new(2, gauge.clone());
        let a = l.try_acquire();
        let b = l.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(l.try_acquire().is_none(), "third over a limit of 2");
        assert_eq!((l.in_flight(), gauge.get()), (2, 2));
        drop(a);
        assert_eq!((l.in_flight(), gauge.get()), (1, 1));
        assert!(l.try_acquire().is_some());
        assert_eq!(gauge.get(), 1, "the permit just taken was dropped");
    }
}
