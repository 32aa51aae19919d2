//! The failover provider passes the shared conformance suite (crates/conformance): a primary
//! and its clone (two software providers under the same master key, as a cloned HSM partition
//! holds the same keys), with LP-325's 70/30 weights, so the suite's calls are spread over both
//! devices and each must answer as the one provider the service sees.

use std::sync::Arc;

use hanzo_kms_core::Provider;
use hanzo_kms_core::config::{FailoverConfig, FailoverWeights};
use hanzo_kms_service::failover::Failover;
use hanzo_kms_software::SoftwareProvider;

fn failover() -> Failover {
    let master = SoftwareProvider::generate_master_key().expect("the system RNG works");
    let device = || -> Arc<dyn Provider> {
        Arc::new(SoftwareProvider::new(&master).expect("a 32-byte master key makes a provider"))
    };
    let cfg = FailoverConfig {
        weights: Some(FailoverWeights {
            primary: 70,
            backup: 30,
        }),
        ..FailoverConfig::default()
    };
    Failover::new(device(), device(), &cfg)
}

hanzo_kms_conformance::conformance_tests!(|_part: &str| failover());
