//! JSON parsing of attestations, settlements and batches: nothing panics, and whatever parses
//! hashes, and re-serialises to JSON that parses to the same value.
#![no_main]

use hanzo_kms_core::eip712::{HMMSettlement, PoAIAttestation, PoAIBatch, from_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(a) = from_json::<PoAIAttestation>("a", text) {
        let _ = a.struct_hash();
        let again: PoAIAttestation = from_json("a", &serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(again, a);
    }
    if let Ok(s) = from_json::<HMMSettlement>("s", text) {
        let _ = s.struct_hash();
        let again: HMMSettlement = from_json("s", &serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }
    if let Ok(b) = from_json::<PoAIBatch>("b", text) {
        let _ = b.struct_hash();
    }
});
