//! Whether the audit log can be written: the state `/readyz` reports and `/metrics` counts.
//!
//! A request that cannot write its audit record fails (`audit_failure`), so a node whose disk
//! is full answers every request with 503. Reads still work then, so a store that answers a
//! read is not enough for readiness: after an audit failure the node is not ready until a
//! record can be written again. Nothing writes while the load balancer sends no traffic, so
//! `/readyz` then writes one itself, a `store.probe` record, at most once a second; the first
//! that commits makes the node ready again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hanzo_kms_core::{Error, ErrorKind, Result};

use crate::{Kms, RequestCtx, audit_event};

/// How long a probe's outcome answers `/readyz` before another record is tried.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The audit log's write health, shared by every clone of a [`Kms`].
#[derive(Debug, Default)]
pub struct AuditHealth {
    /// Set by a request refused because its record could not be written; cleared by the next
    /// request (or probe) whose record committed.
    failing: AtomicBool,
    /// Requests refused because their record could not be written.
    refused: AtomicU64,
    /// The last probe: when, and whether its record committed.
    probe: Mutex<Option<(Instant, bool)>>,
}

impl AuditHealth {
    /// Note how a request through the pipeline ended.
    pub(crate) fn note<T>(&self, r: &Result<T>) {
        match r {
            Err(e) if e.kind() == ErrorKind::AuditFailure => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.failing.store(true, Ordering::Relaxed);
            }
            // Every successful request wrote its record. Read first: a store on every request
            // would make every core write the same cache line.
            Ok(_) => {
                if self.failing.load(Ordering::Relaxed) {
                    self.failing.store(false, Ordering::Relaxed);
                }
            }
            Err(_) => {}
        }
    }

    /// Requests refused because their audit record could not be written.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the last audit write failed and none has succeeded since.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

impl Kms {
    /// The audit log's write health.
    pub fn audit_health(&self) -> &AuditHealth {
        &self.audit_health
    }

    /// Readiness of the store (`/readyz`): it answers a read, and, after an audit failure, a
    /// record can be written again (a `store.probe` record, at most one a second).
    pub async fn store_ready(&self) -> Result<()> {
        self.store.meta("format").await?;
        if !self.audit_health.failing() {
            return Ok(());
        }
        let now = Instant::now();
        let cached = *self
            .audit_health
            .probe
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let ok = match cached {
            Some((at, ok)) if now.duration_since(at) < PROBE_EVERY => ok,
            _ => {
                let ctx = RequestCtx {
                    principal: crate::Principal {
                        id: "system:readyz".into(),
                        tenant: None,
                        roles: Vec::new(),
                        patterns: Vec::new(),
                    },
                    ..RequestCtx::local()
                };
                let event = audit_event(
                    &ctx,
                    "store.probe",
                    None,
                    None,
                    "ok",
                    Some("readiness probe after an audit failure"),
                );
                let ok = match self.audit_event_only(event).await {
                    Ok(()) => {
                        self.audit_health.failing.store(false, Ordering::Relaxed);
                        true
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "readiness probe: the audit log still cannot be written");
                        false
                    }
                };
                *self
                    .audit_health
                    .probe
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((now, ok));
                ok
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::AuditFailure,
                "the audit log cannot be written (is the disk full?)",
            ))
        }
    }
}
