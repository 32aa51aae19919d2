//! Memory follows the file, not the segment size: a 5 KB file under 64 MiB segments (the
//! largest the format allows) is encrypted and decrypted by the streams without allocating
//! batches it does not fill. Measured as this process's peak resident set (Linux
//! `/proc/self/status` VmHWM, reset through `/proc/self/clear_refs`); this file holds one test so
//! that nothing else runs in the process meanwhile.

use hanzo_kms_core::SecretKey32;
use hanzo_kms_core::weights::MAX_SEGMENT;
use hanzo_kms_weights::{Draft, FileCipher, decrypt_stream, encrypt_stream};

/// The peak resident set of this process so far, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[test]
fn a_small_file_under_the_largest_segments_costs_about_its_own_size() {
    let dek = SecretKey32::from_bytes([7; 32]);
    let (header, cipher): (_, FileCipher) =
        Draft::with_randomness("acme:gpt4", b"", Some(MAX_SEGMENT), [1; 32], [2; 7])
            .unwrap()
            .finish("model:acme:gpt4", 1, vec![9; 60], &dek)
            .unwrap();
    let plain: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
    let head = header.encode().unwrap();

    // Reset the peak to the current resident set (Linux 4.0+), so that what the test binary's
    // start-up touched does not count.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let before = peak_kib();

    let mut file = Vec::new();
    let n = encrypt_stream(&cipher, &head, &plain[..], &mut file, 4, &|_| {}).unwrap();
    assert_eq!(n, plain.len() as u64);
    let mut back = Vec::new();
    let opened = FileCipher::open(&header, &dek, Some("acme:gpt4")).unwrap();
    decrypt_stream(&opened, &file[head.len()..], &mut back, 4, &|_| {}).unwrap();
    assert_eq!(back, plain);

    // Four threads make batches of eight 64 MiB segments: a stream that sized its buffers by
    // the batch would touch hundreds of MiB here.
    let grown_mib = (peak_kib() - before) as f64 / 1024.0;
    eprintln!("peak RSS grew by {grown_mib:.1} MiB");
    assert!(
        grown_mib < 16.0,
        "encrypting and decrypting 5 KB raised the peak RSS by {grown_mib:.1} MiB"
    );
}
