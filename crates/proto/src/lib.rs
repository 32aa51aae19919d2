//! The Hanzo KMS gRPC API (`proto/hanzo/kms/v1/kms.proto`), generated at build time.
//!
//! Messages derive serde as well as prost: the server and the client turn the service's types
//! into these messages through the same JSON form the REST API uses, so the two APIs cannot
//! drift apart field by field.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("hanzo.kms.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kms_descriptor");
}
