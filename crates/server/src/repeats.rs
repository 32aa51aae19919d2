//! Server errors in the log: the first of a kind with its request id, then one line per interval
//! with how many more there were, instead of one line per request.
//!
//! When the disk fills, every request fails the same way; a line per request wrote 254 MB of log
//! in 40 s in a test, which fills the disk that logs are on too. Failures are told apart by their
//! error kind and message (the request id is not part of it).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use hanzo_kms_core::Error;

/// How long identical failures are counted before their next line.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// Distinct failures remembered at once; past that, the oldest windows are written out early.
const MAX_KINDS: usize = 256;

struct Window {
    started: Instant,
    /// Failures since the window's first line, not logged yet.
    more: u64,
}

static WINDOWS: LazyLock<Mutex<HashMap<(&'static str, String), Window>>> =
    LazyLock::new(Mutex::default);

/// Log a request that failed with a server error (5xx): the first of its kind at once, the
/// rest counted and written as one line per [`INTERVAL`].
pub(crate) fn request_failed(api: &'static str, request_id: &str, e: &Error) {
    let now = Instant::now();
    let key = (e.kind().code(), e.to_string());
    let mut windows = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
    match windows.get_mut(&key) {
        Some(w) if now.duration_since(w.started) < INTERVAL => {
            w.more += 1;
            return;
        }
        Some(w) => {
            let more = std::mem::replace(&mut w.more, 0);
            w.started = now;
            drop(windows);
            tracing::error!(api, request_id, code = e.kind().code(), error = %e, more_in_last_interval = more, "request failed");
            return;
        }
        None => {}
    }
    if windows.len() >= MAX_KINDS {
        flush_locked(&mut windows, now, true);
    }
    windows.insert(
        key,
        Window {
            started: now,
            more: 0,
        },
    );
    drop(windows);
    tracing::error!(api, request_id, code = e.kind().code(), error = %e, "request failed");
}

/// Write out the counts of windows that have ended (the server calls this every few seconds),
/// so that the last of a burst is logged even when no failure follows it.
pub(crate) fn flush() {
    let mut windows = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
    flush_locked(&mut windows, Instant::now(), false);
}

fn flush_locked(windows: &mut HashMap<(&'static str, String), Window>, now: Instant, all: bool) {
    windows.retain(|(code, error), w| {
        if !all && now.duration_since(w.started) < INTERVAL {
            return true;
        }
        if w.more > 0 {
            tracing::error!(code, error = %error, more = w.more, seconds = now.duration_since(w.started).as_secs(), "request failed: more like the last, not logged one by one");
        }
        false
    });
}

/// Failures remembered and counted, for tests: (distinct kinds, failures not logged yet).
#[cfg(test)]
fn pending() -> (usize, u64) {
    let windows = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
    (windows.len(), windows.values().map(|w| w.more).sum())
}

#[cfg(test)]
mod tests {
    use hanzo_kms_core::ErrorKind;

    use super::*;

    #[test]
    fn identical_failures_are_counted_not_logged_one_by_one() {
        let e = Error::new(ErrorKind::AuditFailure, "the disk is full (repeats test)");
        let other = Error::new(ErrorKind::Internal, "something else (repeats test)");
        for i in 0..1000 {
            request_failed("rest", &format!("r{i}"), &e);
        }
        request_failed("grpc", "g1", &other);
        let (kinds, more) = pending();
        assert!(kinds >= 2, "{kinds}");
        assert!(more >= 999, "{more}");
        // A flush before the interval ends keeps counting; after it, nothing stays.
        flush();
        assert!(pending().1 >= 999);
        let mut windows = WINDOWS.lock().unwrap();
        flush_locked(&mut windows, Instant::now() + INTERVAL, false);
        assert!(windows.is_empty());
    }
}
