//! Storage connection strings: any text parses or is refused without a panic, and an error never
//! shows the account key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_azure_storage::connection::Account;

fuzz_target!(|text: &str| {
    if let Err(e) = Account::parse(text) {
        let msg = e.to_string();
        for part in text.split(';') {
            if let Some((k, v)) = part.split_once('=') {
                if k.trim().eq_ignore_ascii_case("accountkey") && v.trim().len() >= 6 {
                    assert!(!msg.contains(v.trim()), "{msg} shows the key");
                }
            }
        }
    }
});
