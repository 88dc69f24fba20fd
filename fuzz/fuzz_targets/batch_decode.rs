//! Fuzz target: the signed batch and bundle decoders must never panic, whatever the bytes.
//!
//! Drives everything the collector runs on untrusted input before and after the
//! signature check: bundle framing, structure parsing, payload hash and signature
//! verification (under a fixed key), and decompression with event validation under a
//! hard size limit.
//!
//! Run with `cargo fuzz run batch_decode` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use yagura_shared::{AgentKey, SignedBatch, decode_bundle, parse_header};

/// A fixed key from an all-zero seed (any will do: the fuzzer cannot forge signatures,
/// it exercises the verification path).
const SEED: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = decode_bundle(data) {
        for frame in frames {
            let _ = parse_header(frame);
        }
    }
    let _ = parse_header(data);
    if let Ok(batch) = SignedBatch::from_bytes(data.to_vec()) {
        if let Ok(key) = AgentKey::from_file_text(SEED) {
            let _ = batch.verify(&key.verifying_key());
        }
        let _ = batch.events(1 << 20);
        let _ = batch.decompressed_payload(1 << 16);
    }
});
