//! The audit log as operations (list, verify), and the records the pipeline and the API layers
//! write (pipeline step 6).

use hanzo_kms_core::{Error, Result};
use hanzo_kms_store::{AuditEvent, AuditRecord, AuditReport};

use crate::archive::VerifyOptions;
use crate::operation as op;
use crate::pipeline::{Done, Target};
use crate::{Kms, RequestCtx, audit_event, audit_failure, commit};

impl Kms {
    /// Audit records after `after`, at most `limit`.
    pub async fn audit_records(
        &self,
        ctx: &RequestCtx,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        self.run(ctx, &op::AUDIT_LIST, Target::None(None), |call| {
            Box::pin(async move {
                let records = call.kms.store().audit_records(after, limit).await?;
                Ok(Done::Ok(records))
            })
        })
        .await
    }

    /// Check the whole audit chain. The report covers the chain as it was found; the record of
    /// this check comes after it, outcome `error` when the chain is broken.
    pub async fn audit_verify(&self, ctx: &RequestCtx) -> Result<AuditReport> {
        self.audit_verify_with(ctx, VerifyOptions::default()).await
    }

    /// [`audit_verify`](Self::audit_verify) with options: from the oldest retained record
    /// (checking that an export covers whatever was pruned), or from the newest signed
    /// checkpoint. Every retained checkpoint's signature is checked either way.
    pub async fn audit_verify_with(
        &self,
        ctx: &RequestCtx,
        opts: VerifyOptions,
    ) -> Result<AuditReport> {
        self.run(ctx, &op::AUDIT_VERIFY, Target::None(None), |call| {
            Box::pin(async move {
                let report = call.kms.verify_retained(opts).await?;
                let intact = report.is_ok();
                Ok(if intact {
                    Done::Ok(report)
                } else {
                    Done::Failed(report, "chain_broken")
                })
            })
        })
        .await
    }

    /// Append one audit record for a request that changes nothing else, durably, before the
    /// caller answers. It goes through the group committer, so concurrent requests share one
    /// transaction and one fsync. Any failure is the audit failure.
    pub(crate) async fn audit_event_only(&self, event: AuditEvent) -> Result<()> {
        let records = commit::Records {
            key: String::new(),
            nonces: Vec::new(),
            expires_at: 0,
            record: Vec::new(),
            consume: None,
            event,
        };
        self.committer()
            .submit(records)
            .await
            .map(|_| ())
            .map_err(audit_failure)
    }

    /// Record a request that was refused before it reached an operation: its body was not the
    /// JSON the route takes, a field was not base64, and so on (the API layer's own checks).
    /// The record is `denied` with the error's kind as the reason, like any refusal. Returns
    /// the audit failure if even that record cannot be written.
    pub async fn audit_refusal(
        &self,
        ctx: &RequestCtx,
        operation: &'static str,
        key: Option<String>,
        error: &Error,
    ) -> Result<()> {
        self.audit_event_only(audit_event(
            ctx,
            operation,
            key,
            None,
            "denied",
            Some(error.kind().code()),
        ))
        .await
    }

    /// Record a request that the API layer cut off at `server.request_timeout_secs`: outcome
    /// `error`, reason `timeout`, under the request's own id. If its operation had already
    /// handed its records to the store, those are in the log too, under the same id; this one
    /// says that the client got no answer from them. Returns the audit failure if the record
    /// cannot be written.
    pub async fn audit_timeout(
        &self,
        ctx: &RequestCtx,
        operation: &'static str,
        key: Option<String>,
    ) -> Result<()> {
        self.audit_event_only(audit_event(
            ctx,
            operation,
            key,
            None,
            "error",
            Some("timeout"),
        ))
        .await
    }
}
