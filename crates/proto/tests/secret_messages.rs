//! The secret messages (plaintexts, data keys, tokens) cannot be cloned or compared: prost's
//! `Clone, PartialEq, Eq, Hash` are removed from them by build.rs (issue 26, item 13). Each
//! check below fails to compile if the trait comes back (the negative-impl trick of the
//! `static_assertions` crate: with an impl the call is ambiguous).

use hanzo_kms_proto::v1 as pb;

/// `lacks::<T>()` compiles only if `T` implements none of `Clone`, `PartialEq`, `Hash`.
trait Ambiguous<A> {
    fn check() {}
}
impl<T: ?Sized> Ambiguous<()> for T {}
struct ViaClone;
struct ViaEq;
struct ViaHash;
impl<T: Clone> Ambiguous<ViaClone> for T {}
impl<T: ?Sized + PartialEq> Ambiguous<ViaEq> for T {}
impl<T: ?Sized + std::hash::Hash> Ambiguous<ViaHash> for T {}

macro_rules! lacks_comparisons {
    ($($t:ty),*) => {
        $(let _ = <$t as Ambiguous<_>>::check;)*
    };
}

#[test]
fn secret_messages_derive_no_clone_eq_or_hash() {
    lacks_comparisons!(
        pb::EncryptRequest,
        pb::DecryptResponse,
        pb::GenerateDataKeyResponse,
        pb::ModelKey,
        pb::CreatedToken
    );
    assert_eq!(hanzo_kms_proto::SECRET_MESSAGES.len(), 5);
}

#[test]
fn secret_messages_debug_shows_no_secret() {
    let m = pb::DecryptResponse {
        plaintext: b"top secret plaintext".to_vec(),
    };
    let shown = format!("{m:?}");
    assert!(!shown.contains("top secret"), "{shown}");
}
