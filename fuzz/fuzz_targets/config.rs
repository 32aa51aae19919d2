//! The YAML config with environment overrides (`Config::from_yaml`), on arbitrary text.
//!
//! Input: YAML, then optionally a NUL byte and override lines `NAME=VALUE` (each NAME gets the
//! `HANZO_KMS__` prefix). An input whose first byte is odd also sets a PKCS#11 PIN through the
//! environment. Invariants: nothing panics; the PIN never appears in an error, in the redacted
//! YAML or in `Debug`; a config that loads renders as YAML that loads again and renders the same.
#![no_main]

use hanzo_kms_core::config::{Config, ENV_PREFIX};
use libfuzzer_sys::fuzz_target;

const PIN: &str = "FuzzPin-9f27c4e1d3";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, env) = text.split_once('\0').unwrap_or((text, ""));
    let mut overrides: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), v.to_owned()))
        .collect();
    let with_pin = data.first().is_some_and(|b| b & 1 == 1) && !text.contains(PIN);
    if with_pin {
        overrides.push((
            format!("{ENV_PREFIX}KMS__LUX__SOFTHSM2__PIN"),
            PIN.to_owned(),
        ));
    }
    match Config::from_yaml(yaml, "fuzz.yaml", overrides) {
        Err(e) => {
            if with_pin {
                assert!(!e.to_string().contains(PIN), "the PIN in an error: {e}");
                assert!(!format!("{e:?}").contains(PIN));
            }
        }
        Ok(c) => {
            let shown = c
                .to_redacted_yaml()
                .expect("a loaded config renders as YAML");
            if with_pin {
                assert!(!shown.contains(PIN), "the PIN in the redacted YAML");
                assert!(!format!("{c:?}").contains(PIN), "the PIN in Debug");
                assert!(!c.to_redacted_json().to_string().contains(PIN));
            }
            let again = Config::from_yaml(&shown, "shown.yaml", std::iter::empty::<(&str, &str)>())
                .unwrap_or_else(|e| panic!("the rendered config does not load: {e}\n{shown}"));
            assert_eq!(again.to_redacted_yaml().unwrap(), shown);
        }
    }
});
