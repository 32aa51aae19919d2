//! The ECDH and RSA schemes recover from a lost login as the AES-GCM path does: the login is
//! taken away from outside the provider (as another component of the process could), and the
//! next unwrap in the device logs in again and succeeds. Its own test binary: a logout reaches
//! every session of the process.

use std::time::Duration;

use hanzo_kms_core::config::{ProviderKind, WrappingScheme};
use hanzo_kms_core::{Algorithm, KeyName, KeyRef, KeySpec, Origin, Provider, Separator};
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings, module};
use hanzo_kms_testkit::softhsm::Token;

#[test]
fn wrapped_keys_under_ecdh_and_rsa_unwrap_again_after_the_login_is_lost() {
    for (i, scheme) in [WrappingScheme::EcdhP256, WrappingScheme::RsaOaep]
        .into_iter()
        .enumerate()
    {
        let t = Token::create(&format!("rs-{i}-{}", std::process::id()))
            .unwrap_or_else(|e| panic!("SoftHSM2 is needed (apt-get install softhsm2): {e}"));
        let mut c = t.vendor_section(ProviderKind::Nitrokey);
        c.wrapping = Some(scheme);
        // No cache: every signature asks the device to unwrap.
        c.wrapped_key_cache = Some(hanzo_kms_core::config::Duration(Duration::ZERO));
        let s = Pkcs11Settings::from_config(ProviderKind::Nitrokey, Some(&c)).unwrap();
        let p = Pkcs11Provider::open(&s, true).unwrap();
        let n = KeyName::parse("poai:acme:w", Separator::default()).unwrap();
        let g = p
            .generate(&KeySpec {
                name: &n,
                version: 1,
                algorithm: Algorithm::MlDsa65,
                label: "w",
            })
            .unwrap();
        assert_eq!(g.origin, Origin::HsmWrapped);
        let r = KeyRef {
            name: &n,
            version: 1,
            algorithm: Algorithm::MlDsa65,
            handle: &g.handle,
        };
        p.sign(&r, b"before").unwrap();
        let ctx = module::load(&t.module, ProviderKind::Softhsm2).unwrap();
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == t.label)
            .unwrap();
        let other = ctx.open_ro_session(slot).unwrap();
        other.logout().unwrap();
        drop(other);
        let sig = p
            .sign(&r, b"after")
            .expect("the pool logs in again and retries");
        assert!(hanzo_kms_crypto::verify::verify(
            Algorithm::MlDsa65,
            &g.public_key.unwrap().bytes,
            b"after",
            &sig.0
        ));
        assert_eq!(p.pool_stats().recoveries, 1, "{scheme}");
    }
}
