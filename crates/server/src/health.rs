//! Liveness, readiness and Prometheus metrics (no token needed).

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hanzo_kms_core::Health;
use serde_json::json;

use crate::server::*;

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

pub(crate) async fn readyz(State(s): State<Shared>) -> Response {
    let store = s.kms.store_ready().await;
    let provider = s.kms.provider_health();
    let (status, body) = match (&store, &provider) {
        (Ok(()), Health::Ok) => (StatusCode::OK, json!({"ready": true})),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false,
                   "store": match &store {
                       Ok(()) => "ok",
                       // Reads work, records cannot be written (a full disk).
                       Err(e) if e.kind() == hanzo_kms_core::ErrorKind::AuditFailure => "audit_failing",
                       Err(_) => "down",
                   },
                   "provider": if provider == Health::Ok { "ok" } else { "down" }}),
        ),
    };
    (status, axum::Json(body)).into_response()
}

pub(crate) async fn metrics(State(s): State<Shared>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    out.push_str("# HELP hanzo_kms_requests_total REST requests by route and status.\n");
    out.push_str("# TYPE hanzo_kms_requests_total counter\n");
    for (route, by_status) in s.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for (status, n) in by_status {
            out.push_str(&format!(
                "hanzo_kms_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
            ));
        }
    }
    counter(
        &mut out,
        "hanzo_kms_rate_limited_total",
        "Requests refused by a rate limit.",
        s.limiter.as_ref().map_or(0, |l| l.rejected()),
    );
    counter(
        &mut out,
        "hanzo_kms_auth_failures_total",
        "Requests whose credential did not authenticate.",
        s.kms.auth_guard().failures.load(Relaxed),
    );
    counter(
        &mut out,
        "hanzo_kms_auth_throttled_total",
        "Requests refused at once because their address made too many failed authentications (auth.failures_per_peer).",
        s.kms.auth_guard().throttled.load(Relaxed),
    );
    let audit = s.kms.audit_health();
    counter(
        &mut out,
        "hanzo_kms_audit_refused_total",
        "Requests refused because their audit record could not be written (audit_failure: a full disk, a broken store).",
        audit.refused(),
    );
    gauge(
        &mut out,
        "hanzo_kms_audit_failing",
        "1 while the last audit write failed and none has succeeded since (/readyz is then 503).",
        u64::from(audit.failing()),
    );
    if let Some(usage) = s.kms.store_disk_usage() {
        gauge(
            &mut out,
            "hanzo_kms_store_bytes",
            "Bytes the SQLite store takes on disk: the database, its WAL and shared-memory files.",
            usage.store_bytes,
        );
        if let Some(free) = usage.free_bytes {
            gauge(
                &mut out,
                "hanzo_kms_store_free_bytes",
                "Bytes free for the store on its filesystem (storage.free_space_warning_mib logs a warning below its threshold).",
                free,
            );
        }
    }
    counter(
        &mut out,
        "hanzo_kms_request_timeouts_total",
        "Requests cancelled by the request timeout.",
        s.timeouts.load(Relaxed),
    );
    if let Some(c) = s.kms.commit_stats() {
        counter(
            &mut out,
            "hanzo_kms_group_commit_requests_total",
            "Signing records committed by the group committer.",
            c.requests.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_group_commit_transactions_total",
            "Transactions of the group committer.",
            c.transactions.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_wal_limit_checkpoints_total",
            "Whole-WAL checkpoints the group committer ran because the SQLite WAL passed its limit (writes waited meanwhile).",
            c.wal_limit_checkpoints.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_group_commit_catch_ups_total",
            "Background checkpoint passes the group committer finished on its own connection between two batches, so that the SQLite WAL starts over.",
            c.catch_ups.load(Relaxed),
        );
        out.push_str("# HELP hanzo_kms_group_commit_seconds_total Time the group committer spent per phase: its transactions (commit), waiting for them to be durable (sync), answering (answer), checkpoints between batches (checkpoint). Their sum against wall time is how busy it is; near 1, it is the signing ceiling.\n");
        out.push_str("# TYPE hanzo_kms_group_commit_seconds_total counter\n");
        for (phase, ns) in [
            ("commit", &c.commit_nanos),
            ("sync", &c.sync_nanos),
            ("answer", &c.answer_nanos),
            ("checkpoint", &c.checkpoint_nanos),
        ] {
            out.push_str(&format!(
                "hanzo_kms_group_commit_seconds_total{{phase=\"{phase}\"}} {:.6}\n",
                ns.load(Relaxed) as f64 / 1e9
            ));
        }
        out.push_str("# HELP hanzo_kms_group_commit_request_wait_seconds_total Time the requests spent waiting on the group committer, summed over requests: for the batch in progress to end so that theirs could start (queue), and, once answered, to run again on the async runtime (wakeup). Divided by hanzo_kms_group_commit_requests_total, the average wait per request.\n");
        out.push_str("# TYPE hanzo_kms_group_commit_request_wait_seconds_total counter\n");
        for (wait, ns) in [("queue", &c.queue_nanos), ("wakeup", &c.wakeup_nanos)] {
            out.push_str(&format!(
                "hanzo_kms_group_commit_request_wait_seconds_total{{wait=\"{wait}\"}} {:.6}\n",
                ns.load(Relaxed) as f64 / 1e9
            ));
        }
    }
    if let Some(n) = s.kms.store_fsyncs() {
        counter(
            &mut out,
            "hanzo_kms_store_fsyncs_total",
            "Syncs of the SQLite write-ahead log to disk (one covers every commit before it).",
            n,
        );
    }
    if let Some(n) = s.kms.store_checkpoints() {
        counter(
            &mut out,
            "hanzo_kms_store_checkpoints_total",
            "Checkpoints that copied SQLite write-ahead log frames into the database; each synced the WAL, and the database too when it caught up with the WAL's end.",
            n,
        );
    }
    let up = if s.kms.provider_health() == Health::Ok {
        1
    } else {
        0
    };
    out.push_str("# HELP hanzo_kms_provider_up Whether the provider's health check passes.\n");
    out.push_str("# TYPE hanzo_kms_provider_up gauge\n");
    out.push_str(&format!("hanzo_kms_provider_up {up}\n"));
    if let Some(fo) = s.kms.failover() {
        let mode = fo.mode();
        out.push_str(
            "# HELP hanzo_kms_failover_mode Where device calls go: 1 for the current mode.\n",
        );
        out.push_str("# TYPE hanzo_kms_failover_mode gauge\n");
        for m in ["primary", "failed-over", "recovering"] {
            let v = u8::from(mode.as_str() == m);
            out.push_str(&format!("hanzo_kms_failover_mode{{mode=\"{m}\"}} {v}\n"));
        }
        counter(
            &mut out,
            "hanzo_kms_failovers_total",
            "Switches of all traffic to the backup device.",
            fo.failovers.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_failbacks_total",
            "Returns of traffic to the recovered primary.",
            fo.failbacks.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_failover_rerouted_total",
            "Device calls retried on the other device after it was unavailable.",
            fo.rerouted.load(Relaxed),
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Body::from(out),
    )
        .into_response()
}

/// One unlabelled Prometheus counter: its HELP and TYPE lines and its value.
pub(crate) fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    ));
}

pub(crate) fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
    ));
}
