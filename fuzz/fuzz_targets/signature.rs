//! Webhook signatures: any header value is refused or accepted without a panic, and the
//! signature of a message always verifies.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_sdk::signature::{hmac_sha256_hex, verify_hmac_sha256};

#[derive(Arbitrary, Debug)]
struct Input {
    secret: Vec<u8>,
    message: Vec<u8>,
    header: String,
    prefix: String,
}

fuzz_target!(|i: Input| {
    let _ = verify_hmac_sha256(&i.secret, &i.message, &i.header, &i.prefix);
    let good = format!("{}{}", i.prefix, hmac_sha256_hex(&i.secret, &i.message));
    // The header value is trimmed before the prefix is taken off, so a prefix that starts with
    // whitespace can never match; any other prefix must.
    if i.prefix.trim_start() == i.prefix {
        verify_hmac_sha256(&i.secret, &i.message, &good, &i.prefix)
            .expect("a message's own signature verifies");
    }
});
