//! The Hanzo KMS gRPC API (`proto/hanzo/kms/v1/kms.proto`), generated at build time.
//!
//! Messages derive serde as well as prost: the server and the client turn the service's types
//! into these messages through the same JSON form the REST API uses, so the two APIs cannot
//! drift apart field by field.
//!
//! Messages that carry plaintexts, data keys or tokens (`SECRET_MESSAGES`) are wiped when
//! dropped, and their `Debug` shows only the secret's length.

#![forbid(unsafe_code)]
#![allow(clippy::all, clippy::pedantic)]

pub mod codec;

include!("secret_messages.rs");

pub mod v1 {
    tonic::include_proto!("hanzo.kms.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kms_descriptor");
}

/// `Debug` for the messages that carry secrets: the other fields, and the secret's length.
mod redacted {
    use std::fmt;

    use super::v1::{
        CreatedToken, DecryptResponse, EncryptRequest, GenerateDataKeyResponse, ModelKey,
    };

    struct Secret(usize);

    impl fmt::Debug for Secret {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "<{} secret bytes>", self.0)
        }
    }

    impl fmt::Debug for EncryptRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("EncryptRequest")
                .field("key", &self.key)
                .field("plaintext", &Secret(self.plaintext.len()))
                .field("aad", &self.aad)
                .finish()
        }
    }

    impl fmt::Debug for DecryptResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("DecryptResponse")
                .field("plaintext", &Secret(self.plaintext.len()))
                .finish()
        }
    }

    impl fmt::Debug for GenerateDataKeyResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("GenerateDataKeyResponse")
                .field("key", &self.key)
                .field("version", &self.version)
                .field("plaintext", &Secret(self.plaintext.len()))
                .field("ciphertext", &self.ciphertext)
                .finish()
        }
    }

    impl fmt::Debug for ModelKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ModelKey")
                .field("header", &self.header)
                .field("data_key", &Secret(self.data_key.len()))
                .field("key", &self.key)
                .field("version", &self.version)
                .finish()
        }
    }

    impl fmt::Debug for CreatedToken {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("CreatedToken")
                .field("info", &self.info)
                .field("token", &Secret(self.token.len()))
                .finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use zeroize::Zeroize;

    #[test]
    fn secret_messages_debug_without_the_secret_and_wipe() {
        let secret = "s3cr3t-d4ta-k3y-b1ts";
        let shows_no_secret = |debug: String| {
            assert!(!debug.contains(secret), "{debug}");
            assert!(debug.contains("<20 secret bytes>"), "{debug}");
        };

        let mut e = EncryptRequest {
            key: "k".into(),
            plaintext: secret.into(),
            aad: b"aad".to_vec(),
        };
        shows_no_secret(format!("{e:?}"));
        e.zeroize();
        assert!(e.plaintext.is_empty() && e.key.is_empty());

        let mut d = DecryptResponse {
            plaintext: secret.into(),
        };
        shows_no_secret(format!("{d:?}"));
        d.zeroize();
        assert!(d.plaintext.is_empty());

        let mut g = GenerateDataKeyResponse {
            key: "k".into(),
            version: 1,
            plaintext: secret.into(),
            ciphertext: "hkms:v1:x".into(),
        };
        shows_no_secret(format!("{g:?}"));
        g.zeroize();
        assert!(g.plaintext.is_empty());

        let mut m = ModelKey {
            header: b"HDR".to_vec(),
            data_key: secret.into(),
            key: "model:a:b".into(),
            version: 2,
        };
        shows_no_secret(format!("{m:?}"));
        m.zeroize();
        assert!(m.data_key.is_empty());

        let mut t = CreatedToken {
            info: Some(TokenInfo {
                id: "tok-1".into(),
                ..Default::default()
            }),
            token: secret.into(),
        };
        shows_no_secret(format!("{t:?}"));
        t.zeroize();
        assert!(t.token.is_empty() && t.info.is_some());
    }
}
