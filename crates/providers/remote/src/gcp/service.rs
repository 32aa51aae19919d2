//! [`RemoteKms`] for [`GcpKms`]: each call of the seam as the Cloud KMS REST call in the
//! table of the module above, with its size limits and integrity checks.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hanzo_kms_core::config::GcpProtectionLevel;
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Result, SecretBytes};
use zeroize::Zeroizing;

use super::crc32c::crc32c;
use super::wire::*;
use super::{GcpKms, MAX_PLAINTEXT, PROVIDER, SERVICE, key_id, wrong_purpose};
use crate::service::{KeyUse, RemoteKms};

impl RemoteKms for GcpKms {
    fn service(&self) -> &'static str {
        PROVIDER
    }

    fn display_name(&self) -> &'static str {
        SERVICE
    }

    fn signs(&self, alg: Algorithm) -> bool {
        match alg {
            Algorithm::P256 => true,
            Algorithm::Secp256k1 => self.protection == GcpProtectionLevel::Hsm,
            Algorithm::Aes256Gcm | Algorithm::Ed25519 | Algorithm::MlDsa65 => false,
        }
    }

    fn create_key(&self, usage: KeyUse, label: &str) -> Result<String> {
        // CryptoKeys are never deleted in Cloud KMS (only their versions), so an id is never
        // free again: add randomness to the label.
        let mut suffix = [0u8; 6];
        aws_lc_rs::rand::fill(&mut suffix)
            .map_err(|_| Error::internal("random generator failed"))?;
        let id = format!("{}-{}", key_id(label, 63 - 13), hex::encode(suffix));
        let key = self.create(usage, &id)?;
        Ok(self.remote_id(usage, &key))
    }

    fn find_root(&self, label: &str) -> Result<Option<String>> {
        let name = format!("{}/cryptoKeys/{}", self.key_ring, key_id(label, 63));
        match self.call::<CryptoKey>("GetCryptoKey", &name, Method::Get, &name, None) {
            Ok(key) => {
                let usage = match key.purpose.as_str() {
                    "ENCRYPT_DECRYPT" => KeyUse::Aes,
                    "MAC" => KeyUse::Hmac,
                    other => {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "{SERVICE}: root key {name} has purpose {other}, not ENCRYPT_DECRYPT or MAC"
                            ),
                        ));
                    }
                };
                Ok(Some(self.remote_id(usage, &key)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound && e.message().contains("CryptoKey") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn create_root(&self, usage: KeyUse, label: &str) -> Result<String> {
        match self.create(usage, &key_id(label, 63)) {
            Ok(key) => Ok(self.remote_id(usage, &key)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                self.find_root(label)?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!("{SERVICE}: root key {label} vanished"),
                    )
                })
            }
            Err(e) => Err(e),
        }
    }

    fn encrypt(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        self.check_size("Encrypt", id, plaintext.len(), aad.len())?;
        let b64 = Zeroizing::new(STANDARD.encode(plaintext));
        let body = Zeroizing::new(format!(
            r#"{{"plaintext":"{}","additionalAuthenticatedData":"{}","plaintextCrc32c":"{}","additionalAuthenticatedDataCrc32c":"{}"}}"#,
            b64.as_str(),
            STANDARD.encode(aad),
            crc32c(plaintext),
            crc32c(aad)
        ));
        let path = format!("{id}:encrypt");
        self.checked("Encrypt", id, || {
            let r: EncryptResponse =
                self.call("Encrypt", id, Method::Post, &path, Some(body.clone()))?;
            let Some(ct) = decode(&r.ciphertext) else {
                return Ok(Err("the ciphertext is not base64".into()));
            };
            if !r.verified_plaintext_crc32c || !r.verified_additional_authenticated_data_crc32c {
                return Ok(Err(
                    "the service did not confirm the request's CRC32C values".into(),
                ));
            }
            if !r.name.starts_with(&format!("{id}/cryptoKeyVersions/")) {
                return Ok(Err(format!("the answer names another key ({})", r.name)));
            }
            Ok(match_crc(&ct, r.ciphertext_crc32c, "ciphertextCrc32c").map(|()| ct))
        })
    }

    fn decrypt(&self, id: &str, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        if ciphertext.len() > MAX_PLAINTEXT + 1024 || aad.len() > MAX_PLAINTEXT {
            return Err(Error::authentication_failed());
        }
        let body = Zeroizing::new(format!(
            r#"{{"ciphertext":"{}","additionalAuthenticatedData":"{}","ciphertextCrc32c":"{}","additionalAuthenticatedDataCrc32c":"{}"}}"#,
            STANDARD.encode(ciphertext),
            STANDARD.encode(aad),
            crc32c(ciphertext),
            crc32c(aad)
        ));
        let path = format!("{id}:decrypt");
        self.checked("Decrypt", id, || {
            let r: DecryptResponse =
                match self.call("Decrypt", id, Method::Post, &path, Some(body.clone())) {
                    Ok(r) => r,
                    // A ciphertext from another key, with other AAD or altered: the service says
                    // only INVALID_ARGUMENT, and so do we (opaque, STYLE.md 7).
                    Err(e) if e.kind() == ErrorKind::InvalidArgument => {
                        return Err(Error::authentication_failed());
                    }
                    Err(e) => return Err(e),
                };
            let Some(pt) = decode(&r.plaintext) else {
                return Ok(Err("the plaintext is not base64".into()));
            };
            let pt = SecretBytes::new(pt);
            Ok(match_crc(pt.expose(), r.plaintext_crc32c, "plaintextCrc32c").map(|()| pt))
        })
    }

    fn sign(&self, id: &str, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>> {
        if !id.contains("/cryptoKeyVersions/") {
            return Err(wrong_purpose("AsymmetricSign", id));
        }
        if !self.signs(alg) || input.len() != 32 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{SERVICE}: AsymmetricSign on {id}: {} over {} bytes is not supported",
                    alg.as_str(),
                    input.len()
                ),
            ));
        }
        let body = Zeroizing::new(format!(
            r#"{{"digest":{{"sha256":"{}"}},"digestCrc32c":"{}"}}"#,
            STANDARD.encode(input),
            crc32c(input)
        ));
        let path = format!("{id}:asymmetricSign");
        self.checked("AsymmetricSign", id, || {
            let r: SignResponse = self.call(
                "AsymmetricSign",
                id,
                Method::Post,
                &path,
                Some(body.clone()),
            )?;
            let Some(sig) = decode(&r.signature) else {
                return Ok(Err("the signature is not base64".into()));
            };
            if !r.verified_digest_crc32c {
                return Ok(Err("the service did not confirm the digest's CRC32C".into()));
            }
            if r.name != id {
                return Ok(Err(format!(
                    "the answer names another key version ({})",
                    r.name
                )));
            }
            Ok(match_crc(&sig, r.signature_crc32c, "signatureCrc32c").map(|()| sig))
        })
    }

    fn public_key(&self, id: &str, alg: Algorithm) -> Result<Vec<u8>> {
        let (want_alg, prefix): (&str, &[u8]) = match alg {
            Algorithm::P256 => ("EC_SIGN_P256_SHA256", &SPKI_P256),
            Algorithm::Secp256k1 => ("EC_SIGN_SECP256K1_SHA256", &SPKI_SECP256K1),
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{SERVICE}: GetPublicKey on {id}: {} keys are not held here",
                        other.as_str()
                    ),
                ));
            }
        };
        let path = format!("{id}/publicKey");
        self.checked("GetPublicKey", id, || {
            let r: PublicKeyResponse = self.call("GetPublicKey", id, Method::Get, &path, None)?;
            if let Err(e) = match_crc(r.pem.as_bytes(), r.pem_crc32c, "pemCrc32c") {
                return Ok(Err(e));
            }
            if r.algorithm != want_alg {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{SERVICE}: key version {id} is {}, expected {want_alg}",
                        r.algorithm
                    ),
                ));
            }
            let Some(der) = spki_der(&r.pem) else {
                return Ok(Err("the PEM is not a PUBLIC KEY".into()));
            };
            match der.strip_prefix(prefix) {
                Some(point) if point.len() == 65 && point[0] == 4 => Ok(Ok(point.to_vec())),
                _ => Ok(Err(
                    "the public key is not an uncompressed point on the key's curve".into(),
                )),
            }
        })
    }

    fn mac(&self, id: &str, data: &[u8]) -> Result<[u8; 32]> {
        if !id.contains("/cryptoKeyVersions/") {
            return Err(wrong_purpose("MacSign", id));
        }
        if data.len() > MAX_PLAINTEXT {
            return Err(Error::invalid(format!(
                "{SERVICE}: MacSign on {id}: more than 64 KiB of data"
            )));
        }
        let body = Zeroizing::new(format!(
            r#"{{"data":"{}","dataCrc32c":"{}"}}"#,
            Zeroizing::new(STANDARD.encode(data)).as_str(),
            crc32c(data)
        ));
        let path = format!("{id}:macSign");
        self.checked("MacSign", id, || {
            let r: MacResponse =
                self.call("MacSign", id, Method::Post, &path, Some(body.clone()))?;
            let Some(mac) = decode(&r.mac) else {
                return Ok(Err("the MAC is not base64".into()));
            };
            let mac = Zeroizing::new(mac);
            if !r.verified_data_crc32c {
                return Ok(Err("the service did not confirm the data's CRC32C".into()));
            }
            if r.name != id {
                return Ok(Err(format!(
                    "the answer names another key version ({})",
                    r.name
                )));
            }
            if let Err(e) = match_crc(&mac, r.mac_crc32c, "macCrc32c") {
                return Ok(Err(e));
            }
            Ok(<[u8; 32]>::try_from(&mac[..]).map_err(|_| "the MAC is not 32 bytes".to_string()))
        })
    }

    fn destroy(&self, id: &str) -> Result<()> {
        // Our keys have exactly one version; an AES key's id is the CryptoKey.
        let version = if id.contains("/cryptoKeyVersions/") {
            id.to_string()
        } else {
            format!("{id}/cryptoKeyVersions/1")
        };
        let path = format!("{version}:destroy");
        match self.call::<CryptoKeyVersion>(
            "DestroyCryptoKeyVersion",
            &version,
            Method::Post,
            &path,
            None,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            // Already scheduled for destruction or destroyed.
            Err(e) if e.kind() == ErrorKind::KeyState && e.message().contains("DESTROY") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn health(&self, root_id: &str) -> Result<()> {
        let key = root_id
            .split("/cryptoKeyVersions/")
            .next()
            .unwrap_or(root_id);
        self.call::<CryptoKey>("GetCryptoKey", key, Method::Get, key, None)
            .map(|_| ())
    }
}
