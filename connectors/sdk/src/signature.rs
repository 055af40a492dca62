//! Webhook signature checks shared by the `http` trigger's `hmac` option and the Slack trigger.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The signature header is absent.
    #[error("missing signature header {0}")]
    Missing(String),
    /// The header does not have the expected prefix or is not hex.
    #[error("malformed signature")]
    Malformed,
    /// The signature does not match the body.
    #[error("signature mismatch")]
    Mismatch,
}

/// HMAC-SHA256 of `message` with `secret`, lower-case hex.
pub fn hmac_sha256_hex(secret: &[u8], message: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Verify `header_value` = `prefix` + hex(HMAC-SHA256(secret, message)) in constant time.
pub fn verify_hmac_sha256(
    secret: &[u8],
    message: &[u8],
    header_value: &str,
    prefix: &str,
) -> Result<(), SignatureError> {
    let hex_sig = header_value
        .trim()
        .strip_prefix(prefix)
        .ok_or(SignatureError::Malformed)?;
    let sig = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(message);
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_style_signature() {
        // Known answer from GitHub's webhook documentation.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        verify_hmac_sha256(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            sig,
            "sha256=",
        )
        .unwrap();
        assert_eq!(
            verify_hmac_sha256(b"other", b"Hello, World!", sig, "sha256="),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hmac_sha256(b"x", b"y", "md5=00", "sha256="),
            Err(SignatureError::Malformed)
        );
    }
}
