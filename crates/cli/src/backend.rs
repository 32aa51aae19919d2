//! Where a command runs: on the data directory (the service in this process) or against a
//! server (`--server URL --token T`, through `hanzo-kms-client`). The commands are written once
//! against this type; both sides return the same types, so the output is the same.

use hanzo_kms_client::Client;
use hanzo_kms_core::eip712::{HMMSettlement, PoAIAttestation};
use hanzo_kms_core::signed::{BatchItem, SignedAttestation, SignedSettlement};
use hanzo_kms_core::weights::Header;
use hanzo_kms_core::{Algorithm, Error, KeyName, Result, SecretBytes};
use hanzo_kms_service::sign::Paid;
use hanzo_kms_service::tokens::TokenInfo;
use hanzo_kms_service::{KeyInfo, Kms, RequestCtx, Role, now_secs};
use hanzo_kms_weights::FileCipher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// A verification answer from either side.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub valid: bool,
    pub reason: Option<String>,
}

pub enum Backend<'a> {
    Local(&'a Kms),
    Remote(&'a Client),
}

fn now() -> u64 {
    u64::try_from(now_secs()).unwrap_or(0)
}

/// A server's answer as the service's own type (both have the same JSON form).
fn same<S: Serialize, T: DeserializeOwned>(v: &S) -> Result<T> {
    serde_json::to_value(v)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::internal(format!("reading the server's answer: {e}")))
}

fn local_verdict(v: hanzo_kms_service::sign::Verdict) -> Verdict {
    Verdict {
        valid: v.valid,
        reason: v.reason.map(str::to_owned),
    }
}

fn remote_verdict(v: hanzo_kms_client::Verdict) -> Verdict {
    Verdict {
        valid: v.valid,
        reason: v.reason,
    }
}

impl Backend<'_> {
    /// The local service, for commands that only run on the data directory.
    pub fn local(&self, command: &str) -> Result<&Kms> {
        match self {
            Self::Local(k) => Ok(k),
            Self::Remote(_) => Err(Error::invalid(format!(
                "`{command}` is not offered over the API; run it where the data directory is \
                 (without --server)"
            ))),
        }
    }

    /// Check a key name where that can be done here (locally, with the configured separator);
    /// a server checks names itself.
    pub fn check_name(&self, s: &str) -> Result<()> {
        match self {
            Self::Local(k) => k.parse_name(s).map(|_| ()),
            Self::Remote(_) => Ok(()),
        }
    }

    /// A `--model` argument (`customer:model` or `model:customer:model`) as its key.
    pub fn model_key(&self, arg: &str) -> Result<KeyName> {
        match self {
            Self::Local(k) => hanzo_kms_service::model::model_key(k, arg),
            Self::Remote(_) => hanzo_kms_service::model::model_key_with(Default::default(), arg),
        }
    }

    fn name(kms: &Kms, s: &str) -> Result<KeyName> {
        kms.parse_name(s)
    }

    pub async fn create_key(
        &self,
        name: &str,
        algorithm: Option<&str>,
        rotation_days: Option<u32>,
    ) -> Result<KeyInfo> {
        match self {
            Self::Local(k) => {
                let alg = algorithm.map(str::parse::<Algorithm>).transpose()?;
                k.create_key(
                    &RequestCtx::local(),
                    &Self::name(k, name)?,
                    alg,
                    rotation_days,
                )
                .await
            }
            Self::Remote(c) => same(&c.create_key_with(name, algorithm, rotation_days).await?),
        }
    }

    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<KeyInfo>> {
        match self {
            Self::Local(k) => k.list_keys(&RequestCtx::local(), prefix).await,
            Self::Remote(c) => same(&c.list_keys(prefix).await?),
        }
    }

    pub async fn show_key(&self, name: &str) -> Result<KeyInfo> {
        match self {
            Self::Local(k) => {
                k.show_key(&RequestCtx::local(), &Self::name(k, name)?)
                    .await
            }
            Self::Remote(c) => same(&c.get_key(name).await?),
        }
    }

    pub async fn rotate_key(&self, name: &str) -> Result<KeyInfo> {
        match self {
            Self::Local(k) => {
                k.rotate_key(&RequestCtx::local(), &Self::name(k, name)?)
                    .await
            }
            Self::Remote(c) => same(&c.rotate_key(name).await?),
        }
    }

    pub async fn create_keyspace(
        &self,
        customer: &str,
        model: &str,
        signing_keys: bool,
    ) -> Result<Vec<KeyInfo>> {
        match self {
            Self::Local(k) => {
                k.create_keyspace(&RequestCtx::local(), customer, model, signing_keys)
                    .await
            }
            Self::Remote(c) => same(&c.create_keyspace(customer, model, signing_keys).await?),
        }
    }

    /// Encrypt small data: the key name, version and `hkms:vN:` text.
    pub async fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(String, u32, String)> {
        match self {
            Self::Local(k) => {
                let c = k
                    .encrypt(&RequestCtx::local(), &Self::name(k, name)?, plaintext, aad)
                    .await?;
                Ok((c.key, c.version, c.text))
            }
            Self::Remote(c) => {
                let text = c.encrypt(name, plaintext, aad).await?;
                let (version, _) = hanzo_kms_service::data::parse_ciphertext(&text)?;
                Ok((name.to_owned(), version, text))
            }
        }
    }

    pub async fn decrypt(&self, name: &str, text: &str, aad: &[u8]) -> Result<SecretBytes> {
        match self {
            Self::Local(k) => {
                k.decrypt(&RequestCtx::local(), &Self::name(k, name)?, text, aad)
                    .await
            }
            Self::Remote(c) => c.decrypt(name, text, aad).await,
        }
    }

    /// A new model-file header under the model key `key`, and its cipher.
    pub async fn model_seal(
        &self,
        key: &KeyName,
        metadata: &[u8],
        segment_size: Option<u32>,
    ) -> Result<(Header, FileCipher)> {
        match self {
            Self::Local(k) => {
                k.model_seal_header(&RequestCtx::local(), key, metadata, segment_size)
                    .await
            }
            Self::Remote(c) => c.model_seal(&key.to_string(), metadata, segment_size).await,
        }
    }

    /// The cipher of a model file's header.
    pub async fn model_open(&self, key: &KeyName, header: &Header) -> Result<FileCipher> {
        match self {
            Self::Local(k) => k.model_open_header(&RequestCtx::local(), key, header).await,
            Self::Remote(c) => c.model_open(&key.to_string(), header).await,
        }
    }

    pub async fn sign_poai(&self, key: &str, att: PoAIAttestation) -> Result<SignedAttestation> {
        match self {
            Self::Local(k) => {
                k.sign_poai(&RequestCtx::local(), &Self::name(k, key)?, att, now())
                    .await
            }
            Self::Remote(c) => c.sign_poai(key, att).await,
        }
    }

    pub async fn verify_poai(&self, signed: &SignedAttestation) -> Result<Verdict> {
        match self {
            Self::Local(k) => Ok(local_verdict(
                k.verify_poai(&RequestCtx::local(), signed, now()).await?,
            )),
            Self::Remote(c) => Ok(remote_verdict(c.verify_poai(signed).await?)),
        }
    }

    pub async fn sign_poai_batch(
        &self,
        key: &str,
        atts: Vec<PoAIAttestation>,
    ) -> Result<Vec<BatchItem>> {
        match self {
            Self::Local(k) => {
                k.sign_poai_batch(&RequestCtx::local(), &Self::name(k, key)?, atts, now())
                    .await
            }
            Self::Remote(c) => c.sign_poai_batch(key, atts).await,
        }
    }

    pub async fn verify_batch_item(&self, item: &BatchItem) -> Result<Verdict> {
        match self {
            Self::Local(k) => Ok(local_verdict(
                k.verify_batch_item(&RequestCtx::local(), item, now())
                    .await?,
            )),
            Self::Remote(c) => Ok(remote_verdict(c.verify_poai_batch_item(item).await?)),
        }
    }

    pub async fn sign_hmm(
        &self,
        key: &str,
        s: HMMSettlement,
        paid: &crate::sign::PaidFile,
    ) -> Result<SignedSettlement> {
        use crate::sign::PaidFile;
        match self {
            Self::Local(k) => {
                let paid = match paid {
                    PaidFile::Attestation(a) => Paid::Attestation(a),
                    PaidFile::Item(i) => Paid::Item(i),
                };
                k.sign_hmm(
                    &RequestCtx::local(),
                    &Self::name(k, key)?,
                    s,
                    Some(paid),
                    now(),
                )
                .await
            }
            Self::Remote(c) => match paid {
                PaidFile::Attestation(a) => c.sign_hmm_settlement(key, s, a).await,
                PaidFile::Item(i) => c.sign_hmm_settlement_for_item(key, s, i).await,
            },
        }
    }

    pub async fn verify_hmm(
        &self,
        s: &SignedSettlement,
        att: Option<&SignedAttestation>,
    ) -> Result<Verdict> {
        match self {
            Self::Local(k) => Ok(local_verdict(
                k.verify_hmm(&RequestCtx::local(), s, att, now()).await?,
            )),
            Self::Remote(c) => Ok(remote_verdict(c.verify_hmm_settlement(s, att).await?)),
        }
    }

    pub async fn create_token(
        &self,
        tenant: &str,
        roles: &[String],
        patterns: &[String],
        description: &str,
        ttl_secs: Option<u64>,
    ) -> Result<(TokenInfo, Zeroizing<String>)> {
        match self {
            Self::Local(k) => {
                let roles = roles
                    .iter()
                    .map(|r| Role::parse(r))
                    .collect::<Result<Vec<_>>>()?;
                let (info, token) = k
                    .create_token_for(
                        &RequestCtx::local(),
                        tenant,
                        &roles,
                        patterns,
                        description,
                        ttl_secs,
                    )
                    .await?;
                Ok((info, Zeroizing::new(token.expose().to_owned())))
            }
            Self::Remote(c) => {
                let (info, token) = c
                    .create_token_for(tenant, roles, patterns, description, ttl_secs)
                    .await?;
                Ok((same(&info)?, token))
            }
        }
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        match self {
            Self::Local(k) => k.list_tokens(&RequestCtx::local()).await,
            Self::Remote(c) => same(&c.list_tokens().await?),
        }
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        match self {
            Self::Local(k) => k.revoke_token(&RequestCtx::local(), id).await,
            Self::Remote(c) => same(&c.revoke_token(id).await?),
        }
    }
}
