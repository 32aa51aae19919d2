//! Session recovery on a real SoftHSM2 token: the login lost from outside the provider, then
//! the module finalised under it. The test reaches the process's module context through the
//! module registry (as another component of the process would) to break the sessions.

use hanzo_kms_core::config::ProviderKind;
use hanzo_kms_core::{Algorithm, Health, KeyName, KeyRef, KeySpec, Provider, Separator};
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings, module};
use hanzo_kms_testkit::softhsm::Token;

fn provider(test: &str) -> (Token, Pkcs11Provider) {
    let t = Token::create(&format!("{test}-{}", std::process::id()))
        .unwrap_or_else(|e| panic!("SoftHSM2 is needed (apt-get install softhsm2): {e}"));
    let s = Pkcs11Settings::from_config(ProviderKind::Softhsm2, Some(&t.section())).unwrap();
    let p = Pkcs11Provider::open(&s, true).unwrap();
    (t, p)
}

#[test]
fn signing_recovers_after_the_login_is_lost_and_after_c_finalize() {
    let (t, p) = provider("relogin");
    let n = KeyName::parse("poai:acme:r", Separator::default()).unwrap();
    let g = p
        .generate(&KeySpec {
            name: &n,
            version: 1,
            algorithm: Algorithm::Secp256k1,
            label: "r",
        })
        .unwrap();
    let r = KeyRef {
        name: &n,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        handle: &g.handle,
    };
    p.sign(&r, &[3u8; 32]).unwrap();
    // Log the application out from a session of our own: every session loses the login,
    // and the next private-key call answers CKR_USER_NOT_LOGGED_IN.
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
        .sign(&r, &[3u8; 32])
        .expect("the pool logs in again and retries");
    assert!(hanzo_kms_crypto::verify::verify(
        Algorithm::Secp256k1,
        &g.public_key.unwrap().bytes,
        &[3u8; 32],
        &sig.0
    ));
    assert_eq!(p.pool_stats().recoveries, 1);
    assert_eq!(p.health(), Health::Ok);

    // Now the module itself is finalised under the provider (another component of the
    // process calling C_Finalize): every session handle dies. The health check finds the
    // dead anchor session and rebuilds the pool itself (re-initialise, reopen, log in), so
    // a device that is back passes its check (failover relies on this); the next call
    // re-finds the objects and succeeds.
    // (One test function: a finalise would break any other test using the module meanwhile.)
    ctx.clone().finalize().unwrap();
    assert_eq!(p.health(), Health::Ok);
    assert_eq!(
        p.pool_stats().recoveries,
        2,
        "the health check recovered the pool"
    );
    let sig = p.sign(&r, &[4u8; 32]).expect("works after C_Finalize");
    assert!(hanzo_kms_crypto::verify::recover_secp256k1(&[4u8; 32], &sig.0).is_some());
    assert_eq!(p.pool_stats().recoveries, 2);
    assert_eq!(p.health(), Health::Ok);
    // The model-key path (object cache of another class) recovers as well.
    let a = p
        .generate(&KeySpec {
            name: &n,
            version: 2,
            algorithm: Algorithm::Aes256Gcm,
            label: "a",
        })
        .unwrap();
    let ar = KeyRef {
        name: &n,
        version: 2,
        algorithm: Algorithm::Aes256Gcm,
        handle: &a.handle,
    };
    let (dek, wrapped) = p.generate_data_key(&ar, b"x").unwrap();
    assert_eq!(
        p.unwrap_data_key(&ar, &wrapped, b"x").unwrap().expose(),
        dek.expose()
    );
}
