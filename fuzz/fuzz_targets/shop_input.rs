//! Fuzz target: what the shop parses from requests — the contact form (as JSON, then its
//! field rules), email addresses, SKUs and quantities — must never panic, and whatever
//! is accepted must be within the limits.
//!
//! The shop's domain modules use only serde, serde_json's input and uuid, so they are
//! compiled here from their source files rather than pulling the collector in.
//!
//! Run with `cargo fuzz run shop_input` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../collector/src/shop/domain/user.rs"]
#[allow(dead_code)]
mod user;

#[path = "../../collector/src/shop/domain/form.rs"]
#[allow(dead_code)]
mod form;

#[path = "../../collector/src/shop/domain/cart.rs"]
#[allow(dead_code)]
mod cart;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = serde_json::from_slice::<form::RawContactForm>(data)
        && let Ok(parsed) = form::ContactForm::parse(raw)
    {
        assert!(parsed.name().chars().count() <= form::MAX_NAME_CHARS);
        assert!(parsed.address().chars().count() <= form::MAX_ADDRESS_CHARS);
        assert!(parsed.message().chars().count() <= form::MAX_MESSAGE_CHARS);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(email) = user::Email::parse(&text) {
        assert!(email.as_str().len() <= 254);
    }
    if let Ok(sku) = cart::Sku::parse(&text) {
        assert!(!sku.as_str().is_empty());
    }
    if let Some(&first) = data.first() {
        let _ = cart::Quantity::new(u32::from(first) * 3);
    }
    let _ = form::mask_phone(&text);
    let _ = form::mask_email(&text);
});
