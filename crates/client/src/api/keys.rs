//! Keys and keyspaces.

use hanzo_kms_core::Result;

use crate::call::{CreateKey, CreateKeyspace, GetKey, GetPublicKey, ListKeys, RotateKey};
use crate::transport::read;
use crate::{Client, KeyInfo, PublicKeyInfo};

impl Client {
    /// CreateModelKeyspace: the model's encryption key `model:customer:model`, and its PoAI and
    /// HMM signing keys.
    pub async fn create_model_keyspace(&self, customer: &str, model: &str) -> Result<Vec<KeyInfo>> {
        self.create_keyspace(customer, model, true).await
    }

    /// [`Client::create_model_keyspace`], with or without the signing keys.
    pub async fn create_keyspace(
        &self,
        customer: &str,
        model: &str,
        signing_keys: bool,
    ) -> Result<Vec<KeyInfo>> {
        let v = self
            .call_json(&CreateKeyspace {
                customer,
                model,
                signing_keys,
            })
            .await?;
        let list = v.get("keys").cloned().unwrap_or(v);
        read("keys", list)
    }

    /// Create a key (`purpose:customer:name`); `algorithm` `None` takes the purpose's default.
    pub async fn create_key(&self, name: &str, algorithm: Option<&str>) -> Result<KeyInfo> {
        self.create_key_with(name, algorithm, None).await
    }

    /// [`Client::create_key`] with a rotation period in days (0 = never rotate automatically).
    pub async fn create_key_with(
        &self,
        name: &str,
        algorithm: Option<&str>,
        rotation_days: Option<u32>,
    ) -> Result<KeyInfo> {
        let v = self
            .call_json(&CreateKey {
                name,
                algorithm,
                rotation_days,
            })
            .await?;
        read("key", v)
    }

    /// A key's metadata: versions, state, origin, public keys. A key of another tenant is
    /// `NotFound`, like a missing one.
    pub async fn get_key(&self, name: &str) -> Result<KeyInfo> {
        read("key", self.call_json(&GetKey(name)).await?)
    }

    /// The primary version's public key of a signing key (and its Ethereum address for
    /// secp256k1).
    pub async fn get_public_key(&self, name: &str) -> Result<PublicKeyInfo> {
        read("public key", self.call_json(&GetPublicKey(name)).await?)
    }

    /// Keys whose names start with `prefix` (those the token may see).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<KeyInfo>> {
        let v = self.call_json(&ListKeys(prefix)).await?;
        let list = v.get("keys").cloned().unwrap_or(v);
        read("keys", list)
    }

    /// Make a new primary version; older versions still decrypt and verify. Not retried: a
    /// retry after a lost answer would rotate twice.
    pub async fn rotate_key(&self, name: &str) -> Result<KeyInfo> {
        read("key", self.call_json(&RotateKey(name)).await?)
    }
}
