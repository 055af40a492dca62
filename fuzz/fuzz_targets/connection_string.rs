//! Storage connection strings: any text parses or is refused without a panic, and an error never
//! shows an account key, whether it follows `AccountKey=` or was pasted as a part of its own.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_azure_storage::connection::Account;

/// Looks like a real key (base64 with digits and `+/=`); the digits keep it from ever passing
/// for a key name, which errors may echo.
const CANARY: &str = "S3CR3T+K3Y/Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==";

#[derive(Arbitrary, Debug)]
struct Input {
    before: String,
    after: String,
    pasted: bool,
}

fuzz_target!(|i: Input| {
    let _ = Account::parse(&i.before);
    let text = if i.pasted {
        format!("{};{CANARY};{}", i.before, i.after)
    } else {
        format!("{};AccountKey={CANARY};{}", i.before, i.after)
    };
    if let Err(e) = Account::parse(&text) {
        let msg = e.to_string().to_ascii_lowercase();
        assert!(!msg.contains("s3cr3t"), "{msg} shows the key");
    }
});
