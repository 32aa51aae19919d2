//! Failed authentications per client address (`auth.failures_per_peer`).
//!
//! A request whose token does not authenticate costs a token lookup, a MAC and an audit record.
//! A client that keeps sending bad tokens (guessing, or a broken deployment) would make every
//! one of them cost that. So each address has a budget of failures (a GCRA window, as the rate
//! limits have); once it is spent, the address's requests are refused at once, before any
//! lookup, with `rate_limited` and the time to wait, until the window has room again. Valid
//! tokens from that address are refused too, for that time: a guesser cannot mix in a good
//! token to keep going.
//!
//! Those quick refusals are not recorded one by one: the first is, and then at most one record
//! a second per address says how many were refused since the last (outcome `denied`, reason
//! `too_many_failures: N refused`). The address is the peer's IP without its port: a new
//! connection gets a new port.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use hanzo_kms_core::config::RateLimit;
use hanzo_kms_core::{Error, ErrorKind, Result};

/// How often a blocked address's refusals are recorded, as one record with a count.
pub const RECORD_EVERY: Duration = Duration::from_secs(1);

/// Bound on the addresses tracked; past it the blocked list starts afresh.
const MAX_PEERS: usize = 100_000;

/// The guard (see the module docs). `None` limiter: off.
pub struct AuthGuard {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    blocked: Mutex<HashMap<String, Blocked>>,
    /// Failed authentications, all addresses.
    pub failures: AtomicU64,
    /// Requests refused because their address was blocked.
    pub throttled: AtomicU64,
}

struct Blocked {
    until: Instant,
    /// Refusals since the last record.
    unrecorded: u64,
    last_record: Instant,
}

/// What the guard says of a request, before it is authenticated.
pub struct Check {
    /// The refusal, when the address is blocked.
    pub refused: Option<Error>,
    /// Quick refusals to record now, as one record with this count: due once a second while
    /// the address is blocked, and once more for the rest when its block has ended.
    pub record: Option<u64>,
}

impl AuthGuard {
    /// From `auth.failures_per_peer`; an empty limit turns the guard off.
    pub fn new(limit: &RateLimit) -> Result<Self> {
        let bad =
            |why: &str| Error::new(ErrorKind::Config, format!("auth.failures_per_peer: {why}"));
        if limit.per_day.is_some() {
            return Err(bad("takes per_second and burst only"));
        }
        let limiter = match limit.per_second {
            None if limit.burst.is_some() => return Err(bad("burst needs per_second")),
            None => None,
            Some(n) => {
                let rate =
                    NonZeroU32::new(n).ok_or_else(|| bad("per_second must be at least 1"))?;
                let burst = NonZeroU32::new(limit.burst.unwrap_or(n))
                    .ok_or_else(|| bad("burst must be at least 1"))?;
                Some(governor::RateLimiter::keyed(
                    Quota::per_second(rate).allow_burst(burst),
                ))
            }
        };
        Ok(Self {
            limiter,
            blocked: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        })
    }

    /// The guard that never blocks (the CLI, tests).
    pub fn off() -> Self {
        Self {
            limiter: None,
            blocked: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// Before authenticating a request from `addr`.
    pub fn check(&self, addr: &str) -> Check {
        let clear = Check {
            refused: None,
            record: None,
        };
        if self.limiter.is_none() {
            return clear;
        }
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = blocked.get_mut(addr) else {
            return clear;
        };
        if now >= b.until {
            let rest = b.unrecorded;
            blocked.remove(addr);
            return Check {
                refused: None,
                record: (rest > 0).then_some(rest),
            };
        }
        self.throttled.fetch_add(1, Ordering::Relaxed);
        b.unrecorded += 1;
        let record = (now.duration_since(b.last_record) >= RECORD_EVERY).then(|| {
            b.last_record = now;
            std::mem::take(&mut b.unrecorded)
        });
        Check {
            refused: Some(Error::rate_limited(
                "too many failed authentications from this address; wait before trying again",
                b.until.duration_since(now),
            )),
            record,
        }
    }

    /// Refusals not recorded yet, of every address, and forget them: for a periodic record
    /// when no further request from an address comes to carry it.
    pub fn unrecorded(&self) -> Vec<(String, u64)> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked
            .iter_mut()
            .filter(|(_, b)| b.unrecorded > 0)
            .map(|(a, b)| (a.clone(), std::mem::take(&mut b.unrecorded)))
            .collect()
    }

    /// After a failed authentication from `addr`: spend a cell of its budget, and block it when
    /// the budget is gone. Returns whether this failure blocked it.
    pub fn failed(&self, addr: &str) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let Some(limiter) = &self.limiter else {
            return false;
        };
        let Err(not_until) = limiter.check_key(&addr.to_owned()) else {
            return false;
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if blocked.len() >= MAX_PEERS {
            blocked.clear();
        }
        blocked.insert(
            addr.to_owned(),
            Blocked {
                until: now + wait.max(Duration::from_millis(1)),
                unrecorded: 0,
                last_record: now,
            },
        );
        tracing::warn!(
            peer = addr,
            ?wait,
            "too many failed authentications: refusing this address's requests for a while"
        );
        true
    }

    /// Forget addresses whose block has ended and budgets back at full burst.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| b.until > now);
    }
}

/// The client address of a peer (`ip:port` or `[ip6]:port`), without the port.
pub fn address_of(peer: &str) -> &str {
    match peer.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_second: u32, burst: u32) -> AuthGuard {
        AuthGuard::new(&RateLimit {
            per_second: Some(per_second),
            burst: Some(burst),
            per_day: None,
        })
        .unwrap()
    }

    #[test]
    fn an_address_is_blocked_after_its_burst_of_failures_and_records_are_coalesced() {
        let g = guard(1, 3);
        for _ in 0..3 {
            assert!(g.check("10.0.0.1").refused.is_none());
            assert!(!g.failed("10.0.0.1"));
        }
        assert!(g.failed("10.0.0.1"), "the fourth failure blocks");
        // Blocked: refused at once, with a wait, and recorded at most once a second.
        let mut records = 0;
        for _ in 0..1000 {
            let r = g.check("10.0.0.1");
            let e = r.refused.expect("blocked");
            assert_eq!(e.kind(), ErrorKind::RateLimited);
            assert!(e.retry_after().is_some());
            records += usize::from(r.record.is_some());
        }
        assert_eq!(records, 0, "the block's first second records nothing more");
        assert_eq!(g.throttled.load(Ordering::Relaxed), 1000);
        // Another address is untouched.
        assert!(g.check("10.0.0.2").refused.is_none());
        // The count not recorded yet is there for the periodic record, once.
        assert_eq!(g.unrecorded(), vec![("10.0.0.1".to_owned(), 1000)]);
        assert!(g.unrecorded().is_empty());
    }

    #[test]
    fn addresses_lose_their_port() {
        assert_eq!(address_of("127.0.0.1:5555"), "127.0.0.1");
        assert_eq!(address_of("[::1]:443"), "::1");
        assert_eq!(address_of("unix"), "unix");
    }

    #[test]
    fn an_empty_limit_is_off_and_bad_ones_are_config_errors() {
        let off = AuthGuard::new(&RateLimit::default()).unwrap();
        for _ in 0..1000 {
            assert!(!off.failed("a"));
        }
        assert!(off.check("a").refused.is_none());
        for bad in [
            RateLimit {
                per_second: Some(0),
                ..RateLimit::default()
            },
            RateLimit {
                burst: Some(3),
                ..RateLimit::default()
            },
            RateLimit {
                per_second: Some(1),
                per_day: Some(5),
                ..RateLimit::default()
            },
        ] {
            let e = AuthGuard::new(&bad).err().unwrap();
            assert!(e.to_string().contains("auth.failures_per_peer"), "{e}");
        }
    }
}
