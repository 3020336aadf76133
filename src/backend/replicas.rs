//! The replicas of one backend (`base_urls`). Each request goes to the less
//! busy of two replicas drawn at random (power of two choices over
//! outstanding requests). Passive health: a replica that fails
//! `eject.failures` times in a row is ejected for `eject.secs`, doubled at
//! each ejection in a row up to `eject.max_secs`; when that time is up a
//! background probe (`GET <base>/models`, any answer below 500) must
//! succeed before it takes requests again. With one replica nothing is
//! ejected: the backend's circuit breaker covers it.

use crate::config::Eject;
use prometheus::IntGauge;
use rand::Rng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

pub struct Replica {
    /// The request URL (base + path).
    pub url: String,
    /// The base URL, for the health probe.
    base: String,
    outstanding: AtomicUsize,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    consecutive: u32,
    /// Out of rotation until this instant (then: probed).
    ejected_until: Option<Instant>,
    /// Ejections in a row (the back-off doubles with each).
    ejections: u32,
}

pub struct Replicas {
    list: Vec<Arc<Replica>>,
    eject: Eject,
    /// `slmgate_backend_replicas_healthy{backend}`, once attached.
    gauge: OnceLock<IntGauge>,
    /// Whether a probe task runs (without one, an ejection simply ends).
    probing: OnceLock<()>,
}

/// A request's hold on a replica (counted as outstanding until dropped).
pub struct Lease {
    replica: Arc<Replica>,
    pub index: usize,
}

impl Lease {
    pub fn url(&self) -> &str {
        &self.replica.url
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.replica.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Replica {
    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Replicas {
    pub fn new(bases: &[String], path: &str, eject: Eject) -> Arc<Replicas> {
        let list = bases
            .iter()
            .map(|b| {
                let base = b.trim_end_matches('/').to_string();
                Arc::new(Replica {
                    url: format!("{base}{path}"),
                    base,
                    outstanding: AtomicUsize::new(0),
                    health: Mutex::new(Health::default()),
                })
            })
            .collect();
        Arc::new(Replicas {
            list,
            eject,
            gauge: OnceLock::new(),
            probing: OnceLock::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether replica `i` takes requests now.
    fn in_rotation(&self, i: usize, now: Instant) -> bool {
        match self.list[i].lock().ejected_until {
            None => true,
            // Past its time: back only through a probe, when one runs.
            Some(t) => t <= now && self.probing.get().is_none(),
        }
    }

    /// Replicas in rotation now.
    pub fn healthy(&self) -> usize {
        let now = Instant::now();
        (0..self.list.len())
            .filter(|&i| self.in_rotation(i, now))
            .count()
    }

    /// A replica for the next attempt: the less busy of two random ones in
    /// rotation and not in `tried`; else of those in rotation; with none in
    /// rotation, the one whose ejection ends first (better a try than none).
    pub fn pick(&self, tried: &[usize]) -> Lease {
        let now = Instant::now();
        let all: Vec<usize> = (0..self.list.len()).collect();
        let rotation: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| self.in_rotation(i, now))
            .collect();
        let fresh: Vec<usize> = rotation
            .iter()
            .copied()
            .filter(|i| !tried.contains(i))
            .collect();
        let up = if fresh.is_empty() { rotation } else { fresh };
        let index = match up.len() {
            0 => all
                .iter()
                .copied()
                .min_by_key(|&i| self.list[i].lock().ejected_until)
                .unwrap_or(0),
            1 => up[0],
            n => {
                let mut rng = rand::rng();
                let a = up[rng.random_range(0..n)];
                let mut b = up[rng.random_range(0..n - 1)];
                if b == a {
                    b = up[n - 1];
                }
                let load = |i: usize| self.list[i].outstanding.load(Ordering::Acquire);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        let replica = self.list[index].clone();
        replica.outstanding.fetch_add(1, Ordering::AcqRel);
        Lease { replica, index }
    }

    /// The outcome of an attempt on replica `i`: ok (it answered, whatever
    /// it said about the request) or failed (no usable answer).
    pub fn record(&self, i: usize, ok: bool) {
        if self.list.len() < 2 {
            return;
        }
        let now = Instant::now();
        let mut h = self.list[i].lock();
        if ok {
            h.consecutive = 0;
            h.ejections = 0;
            return;
        }
        h.consecutive += 1;
        // Out of rotation already (an ejection that ended counts as over
        // only when no probe task decides).
        let out = h
            .ejected_until
            .is_some_and(|t| t > now || self.probing.get().is_some());
        if h.consecutive >= self.eject.failures && !out {
            let secs = h.eject(&self.eject);
            h.consecutive = 0;
            drop(h);
            tracing::warn!(replica = i, secs, "replica ejected after repeated failures");
            self.update_gauge();
        }
    }

    /// Count healthy replicas in `gauge` from now on.
    pub fn attach_gauge(&self, gauge: IntGauge) {
        let g = self.gauge.get_or_init(|| gauge);
        g.set(self.healthy() as i64);
    }

    fn update_gauge(&self) {
        if let Some(g) = self.gauge.get() {
            g.set(self.healthy() as i64);
        }
    }

    /// Probe ejected replicas whose time is up, every 250 ms, for as long
    /// as the backend exists (needs a tokio runtime; without one an
    /// ejection simply ends).
    pub fn start_probes(self: &Arc<Self>, client: reqwest::Client) {
        if self.list.len() < 2 {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.probing.set(()).is_err() {
            return;
        }
        let weak: Weak<Replicas> = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(this) = weak.upgrade() else { return };
                this.probe_due(&client).await;
            }
        });
    }

    async fn probe_due(&self, client: &reqwest::Client) {
        let now = Instant::now();
        for r in &self.list {
            let due = r.lock().ejected_until.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let probe = client
                .get(format!("{}/models", r.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            let alive = probe.is_ok_and(|resp| resp.status().as_u16() < 500);
            let mut h = r.lock();
            if alive {
                // Back in rotation; `ejections` stays until a request
                // succeeds, so a replica that answers probes but fails
                // requests is ejected for longer each time.
                h.ejected_until = None;
                h.consecutive = 0;
                drop(h);
                tracing::info!(replica = %r.base_redacted(), "replica back in rotation after a probe");
            } else {
                h.eject(&self.eject);
                drop(h);
            }
            self.update_gauge();
        }
    }
}

impl Replica {
    /// Scheme, host and port only (a base URL may carry credentials).
    fn base_redacted(&self) -> String {
        reqwest::Url::parse(&self.base)
            .map(|u| {
                format!(
                    "{}://{}:{}",
                    u.scheme(),
                    u.host_str().unwrap_or("?"),
                    u.port_or_known_default().unwrap_or(0)
                )
            })
            .unwrap_or_default()
    }
}

impl Health {
    /// Out of rotation for the next back-off; returns its length in seconds.
    fn eject(&mut self, e: &Eject) -> f64 {
        let secs = backoff(e, self.ejections);
        self.ejected_until = Some(Instant::now() + Duration::from_secs_f64(secs));
        self.ejections += 1;
        secs
    }
}

/// The ejection time after `ejections` ejections in a row.
fn backoff(e: &Eject, ejections: u32) -> f64 {
    (e.secs * 2f64.powi(ejections.min(16) as i32)).min(e.max_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(failures: u32) -> Arc<Replicas> {
        let bases = ["http://a".to_string(), "http://b".into(), "http://c".into()];
        Replicas::new(
            &bases,
            "/chat/completions",
            Eject {
                failures,
                secs: 60.0,
                max_secs: 600.0,
            },
        )
    }

    #[test]
    fn least_outstanding_of_two() {
        let r = three(3);
        // Two busy replicas: the idle one wins every draw it is part of,
        // and a draw always has two distinct replicas.
        r.list[0].outstanding.store(5, Ordering::Release);
        r.list[1].outstanding.store(5, Ordering::Release);
        let mut to_c = 0;
        for _ in 0..300 {
            let l = r.pick(&[]);
            to_c += usize::from(l.index == 2);
        }
        // P(c drawn) = 2/3: about 200 of 300.
        assert!((150..=250).contains(&to_c), "{to_c}");
        assert_eq!(
            r.list[2].outstanding.load(Ordering::Acquire),
            0,
            "leases given back"
        );
    }

    #[test]
    fn ejects_after_failures_in_a_row_and_avoids_what_was_tried() {
        let r = three(2);
        r.record(0, false);
        r.record(0, true);
        r.record(0, false);
        assert_eq!(r.healthy(), 3, "not two in a row");
        r.record(0, false);
        assert_eq!(r.healthy(), 2);
        for _ in 0..50 {
            assert_ne!(r.pick(&[]).index, 0, "ejected");
            assert_eq!(r.pick(&[1]).index, 2, "1 was tried");
        }
        // Everything tried or ejected: still an answer.
        let l = r.pick(&[1, 2]);
        assert!(l.index < 3);
        assert_eq!(backoff(&r.eject, 0), 60.0);
        assert_eq!(backoff(&r.eject, 5), 600.0, "capped");
    }
}
