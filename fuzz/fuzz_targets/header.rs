//! The model-file header parser and the segment layout arithmetic, on arbitrary bytes.
#![no_main]

use hanzo_kms_core::weights::{Header, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Header::parse_prefix(data) {
        Ok(Parse::Done(h, n)) => {
            assert!(n <= data.len());
            // What parses re-encodes to the same bytes.
            assert_eq!(h.encode().unwrap(), &data[..n]);
            if let Ok(layout) = h.layout((data.len() - n) as u64) {
                assert_eq!(layout.body_len(), (data.len() - n) as u64);
                let total: u64 = (0..layout.segments.min(4)).map(|i| layout.plaintext_len_of(i)).sum();
                assert!(total <= layout.plaintext_len);
            }
        }
        Ok(Parse::NeedMore(m)) => assert!(m > data.len()),
        Err(_) => {}
    }
});
