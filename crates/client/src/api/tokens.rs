//! API tokens and the audit log.

use hanzo_kms_core::{Error, Result};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::call::{CreateToken, ListAudit, ListTokens, RevokeToken, VerifyAudit};
use crate::transport::{Answer, read, text_field};
use crate::{Client, TokenInfo};

impl Client {
    /// Create a token for `tenant` (`*` = all tenants) with `roles` and optional key-name
    /// patterns. Returns its description and the token itself, which is shown only this once.
    pub async fn create_token(
        &self,
        tenant: &str,
        roles: &[String],
        patterns: &[String],
        description: &str,
    ) -> Result<(TokenInfo, Zeroizing<String>)> {
        self.create_token_for(tenant, roles, patterns, description, None)
            .await
    }

    /// [`Client::create_token`] with a lifetime: the token stops working `ttl_secs` seconds
    /// from now (1 s to 10 years). `None`: until revoked.
    pub async fn create_token_for(
        &self,
        tenant: &str,
        roles: &[String],
        patterns: &[String],
        description: &str,
        ttl_secs: Option<u64>,
    ) -> Result<(TokenInfo, Zeroizing<String>)> {
        let call = CreateToken {
            tenant,
            roles,
            patterns,
            description,
            ttl_secs,
        };
        match self.call(&call).await? {
            Answer::Grpc(mut m) => {
                let info = m
                    .info
                    .take()
                    .ok_or_else(|| Error::internal("the server's answer has no token info"))?;
                Ok((info, Zeroizing::new(std::mem::take(&mut m.token))))
            }
            Answer::Rest(v) => {
                let token = Zeroizing::new(text_field(&v, "token")?);
                let mut info = v.take();
                if let Some(mut t) = info.as_object_mut().and_then(|o| o.remove("token")) {
                    hanzo_kms_core::secret::wipe_json(&mut t);
                }
                Ok((read("token", info)?, token))
            }
        }
    }

    /// Tokens the caller may see.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let v = self.call_json(&ListTokens).await?;
        let list = v.get("tokens").cloned().unwrap_or(v);
        read("tokens", list)
    }

    /// Revoke a token by id. A token already revoked is a `key_state` error.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        read("token", self.call_json(&RevokeToken(id)).await?)
    }

    /// Audit records after sequence number `after`, at most `limit` (the server caps it at
    /// 1,000), as JSON objects. Needs an all-tenant token with the audit role.
    pub async fn audit_records(&self, after: u64, limit: u32) -> Result<Vec<Value>> {
        let v = self.call_json(&ListAudit { after, limit }).await?;
        let list = v.get("records").cloned().unwrap_or(v);
        read("audit records", list)
    }

    /// Verify the audit hash chain; the server's report as JSON.
    pub async fn audit_verify(&self) -> Result<Value> {
        self.call_json(&VerifyAudit).await
    }
}
