//! Every REST request body, through the server's own reading of it (`read_body::<T>`, which
//! the handlers run before they call the service): UTF-8, the object-not-array checks against
//! the route's schema, and the typed JSON parse with field-path errors.
//!
//! Input: one byte choosing the route, then the body. Invariants: nothing panics; an accepted
//! body is a JSON object; an error never repeats the plaintext of an encrypt request.
#![no_main]

use hanzo_kms_server::fuzzing::rest_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let (path, r) = rest_body(route.into(), body);
    match r {
        Ok(()) => {
            let v: serde_json::Value = serde_json::from_slice(body).expect("accepted JSON");
            assert!(
                v.is_object(),
                "{path}: accepted a body that is not an object"
            );
        }
        Err(e) => {
            // The plaintext (a secret) may be echoed only where it also appears elsewhere in
            // the body, e.g. as a field name.
            if path.ends_with("/encrypt")
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
                && let Some(p) = v.get("plaintext").and_then(|p| p.as_str())
                && p.len() >= 8
                && std::str::from_utf8(body).is_ok_and(|t| t.matches(p).count() == 1)
            {
                assert!(!e.to_string().contains(p), "{path}: the plaintext in {e}");
            }
        }
    }
});
