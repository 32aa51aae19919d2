//! Setup the service's test files share: a store in a temporary directory, opened with a
//! configuration given as YAML.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;

use hanzo_kms_core::Config;
use hanzo_kms_service::{Kms, RequestCtx, Settings};

/// Settings for a store in `dir`, configured by `yaml` ("" for the defaults).
pub fn settings(dir: &Path, yaml: &str) -> Settings {
    Settings {
        data_dir: dir.to_path_buf(),
        config: Config::from_yaml(yaml, "test", std::iter::empty::<(&str, &str)>()).unwrap(),
        master_key_env: None,
    }
}

/// A new store in a new temporary directory.
pub async fn init(yaml: &str) -> (tempfile::TempDir, Kms) {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = Kms::init(&settings(dir.path(), yaml)).await.unwrap();
    (dir, kms)
}

/// The local operator (all tenants, admin).
pub fn ctx() -> RequestCtx {
    RequestCtx::local()
}
