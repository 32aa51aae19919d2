//! gRPC request messages to the service's values: a message decoded from the fuzz bytes with
//! prost (as tonic's decoder does), then the server's conversions of it (`from_pb` through the
//! JSON form, the batch path's direct `attestation_from_pb`, key names, algorithms, roles).
//!
//! Input: one byte choosing the message, then its protobuf encoding. Invariants: nothing panics;
//! the direct and the JSON conversion of an attestation agree; what converts goes back to a
//! message (`to_pb`, the answers' path) that converts to the same value.
#![no_main]

use hanzo_kms_core::eip712::{HMMSettlement, PoAIAttestation};
use hanzo_kms_core::name::{KeyName, Separator};
use hanzo_kms_core::signed::{BatchItem, SignedAttestation, SignedSettlement};
use hanzo_kms_core::{Algorithm, Result};
use hanzo_kms_proto::v1 as pb;
use hanzo_kms_server::fuzzing::{
    grpc_attestation_from_pb, grpc_attestation_to_pb, grpc_from_pb, grpc_to_pb,
};
use hanzo_kms_service::Role;
use hanzo_kms_service::sign::Paid;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `from_pb`, and for what converts: `to_pb` then `from_pb` gives it back.
fn convert<P, T>(what: &str, p: &P) -> Result<T>
where
    P: Serialize + DeserializeOwned,
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let v: T = grpc_from_pb(what, p)?;
    let back: P = grpc_to_pb(&v).expect("a converted value goes back to a message");
    let again: T = grpc_from_pb(what, &back).expect("the message of a value converts");
    assert_eq!(again, v);
    Ok(v)
}

fn key(s: &str) {
    let sep = Separator::new(':').unwrap();
    if let Ok(n) = KeyName::parse(s, sep) {
        assert_eq!(n.to_string(), s);
        assert_eq!(KeyName::parse(&n.to_string(), sep).unwrap(), n);
    }
}

fn attestation(i: usize, a: &pb::PoAiAttestation) -> Option<PoAIAttestation> {
    let direct = grpc_attestation_from_pb(i, a.clone());
    let json: Result<PoAIAttestation> = convert("attestation", a);
    match (direct, json) {
        (Ok(d), Ok(j)) => {
            assert_eq!(d, j, "the batch path and the JSON path disagree");
            let back = grpc_attestation_to_pb(d.clone());
            assert_eq!(grpc_attestation_from_pb(i, back).unwrap(), d);
            Some(d)
        }
        (Err(_), Err(_)) => None,
        (d, j) => panic!("one conversion accepts what the other refuses: {d:?} / {j:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            let Ok(m) = pb::SignPoaiRequest::decode(bytes) else {
                return;
            };
            key(&m.key);
            if let Some(a) = &m.attestation {
                attestation(0, a);
            }
        }
        1 => {
            let Ok(m) = pb::SignedAttestation::decode(bytes) else {
                return;
            };
            let _ = convert::<_, SignedAttestation>("request", &m);
        }
        2 => {
            let Ok(m) = pb::BatchItem::decode(bytes) else {
                return;
            };
            let _ = convert::<_, BatchItem>("request", &m);
        }
        3 => {
            let Ok(m) = pb::SignPoaiBatchRequest::decode(bytes) else {
                return;
            };
            key(&m.key);
            for (i, a) in m.attestations.iter().enumerate() {
                attestation(i, a);
            }
        }
        4 => {
            let Ok(m) = pb::SignHmmSettlementRequest::decode(bytes) else {
                return;
            };
            key(&m.key);
            if let Some(s) = &m.settlement {
                let _ = convert::<_, HMMSettlement>("settlement", s);
            }
            let att = m
                .attestation
                .as_ref()
                .and_then(|a| convert::<_, SignedAttestation>("attestation", a).ok());
            let item = m
                .attestation_item
                .as_ref()
                .and_then(|i| convert::<_, BatchItem>("attestation_item", i).ok());
            let paid = Paid::of(att.as_ref(), item.as_ref());
            assert_eq!(paid.is_err(), att.is_some() && item.is_some());
        }
        5 => {
            let Ok(m) = pb::VerifyHmmSettlementRequest::decode(bytes) else {
                return;
            };
            if let Some(s) = &m.signed {
                let _ = convert::<_, SignedSettlement>("signed", s);
            }
            if let Some(a) = &m.attestation {
                let _ = convert::<_, SignedAttestation>("attestation", a);
            }
        }
        6 => {
            let Ok(m) = pb::CreateTokenRequest::decode(bytes) else {
                return;
            };
            for r in &m.roles {
                if let Ok(role) = Role::parse(r) {
                    assert_eq!(role.as_str(), r);
                }
            }
        }
        _ => {
            let Ok(m) = pb::CreateKeyRequest::decode(bytes) else {
                return;
            };
            key(&m.name);
            if let Ok(a) = m.algorithm.parse::<Algorithm>() {
                assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
            }
        }
    }
});
