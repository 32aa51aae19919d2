//! Backup bundles and Shamir share files (`open_bundle`): the header line, the argon2id costs it
//! asks for, the share files, the recovery of the backup key and the sealed payload.
//!
//! Input: the bundle, then optionally a NUL byte and share files separated by NUL bytes. With no
//! share file the bundle is opened with a fixed passphrase. Invariants: nothing panics; an error
//! never contains the passphrase or a share's secret hex. Bundles asking for argon2id costs
//! above 64 KiB × 2 passes are skipped: they would only measure argon2.
#![no_main]

use hanzo_kms_service::backup::{Unlock, open_bundle};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

const PASSPHRASE: &str = "fuzz passphrase 4e1b7c";

fn costly(bundle: &[u8]) -> bool {
    let line = bundle.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return false;
    };
    let cost = |k: &str| v["protection"][k].as_u64().unwrap_or(0);
    cost("m_cost_kib") > 64 || cost("t_cost") > 2 || cost("p_cost") > 2
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let bundle = parts.next().unwrap_or_default();
    let shares: Vec<(String, Zeroizing<String>)> = parts
        .enumerate()
        .filter_map(|(i, s)| {
            let text = std::str::from_utf8(s).ok()?;
            Some((format!("bundle.share-{i}"), Zeroizing::new(text.to_owned())))
        })
        .collect();
    let secrets: Vec<String> = shares
        .iter()
        .filter_map(|(_, text)| {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            let s = v.get("share")?.as_str()?;
            // Checked only where the share's text appears once in the input.
            (s.len() >= 16 && data.windows(s.len()).filter(|w| *w == s.as_bytes()).count() == 1)
                .then(|| s.to_owned())
        })
        .collect();
    let unlock = if shares.is_empty() {
        if costly(bundle) {
            return;
        }
        Unlock::Passphrase(Zeroizing::new(PASSPHRASE.to_owned()))
    } else {
        Unlock::Shares(shares)
    };
    if let Err(e) = open_bundle(bundle, &unlock) {
        let msg = format!("{e} {e:?}");
        if !data
            .windows(PASSPHRASE.len())
            .any(|w| w == PASSPHRASE.as_bytes())
        {
            assert!(!msg.contains(PASSPHRASE), "the passphrase in {msg}");
        }
        for s in &secrets {
            assert!(!msg.contains(s.as_str()), "a share in {msg}");
        }
    }
});
