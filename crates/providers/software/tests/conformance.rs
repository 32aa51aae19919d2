//! The software provider passes the shared conformance suite (crates/conformance), each part
//! on a provider under a fresh random master key.

use hanzo_kms_software::SoftwareProvider;

fn software() -> SoftwareProvider {
    let master = SoftwareProvider::generate_master_key().expect("the system RNG works");
    SoftwareProvider::new(&master).expect("a 32-byte master key makes a provider")
}

hanzo_kms_conformance::conformance_tests!(|_part: &str| software());
