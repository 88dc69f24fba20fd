//! Fuzz target: the analyst query parser must never panic, whatever the text, and an
//! error must point into the text.
//!
//! The parser (`collector/src/search/query.rs`) uses only `std`, so it is compiled here
//! from its source file rather than pulling the whole collector into the fuzz build.
//!
//! Run with `cargo fuzz run search_query` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../collector/src/search/query.rs"]
#[allow(dead_code)]
mod query;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(error) = query::parse(&text) {
        assert!(error.column >= 1 && error.column <= text.chars().count() + 1);
    }
});
