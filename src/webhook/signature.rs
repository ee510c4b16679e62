//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a signature header is unusable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error("the X-Hub-Signature-256 header is not `sha256=<64 hex digits>`")]
    Malformed,
}

/// The digest carried by a `sha256=<hex>` header.
pub fn parse_header(header: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    // By bytes: a multi-byte character must be refused, not split.
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or(SignatureError::Malformed)
        })
        .collect()
}

/// Whether `digest` is the HMAC-SHA256 of `body` under `secret` (constant-time comparison).
pub fn verifies(secret: &[u8], body: &[u8], digest: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(digest).is_ok()
}

/// The header GitHub would send for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from GitHub's documentation on validating webhook deliveries.
    #[test]
    fn matches_githubs_documented_example() {
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            header
        );
        let digest = parse_header(Some(header)).unwrap();
        assert!(verifies(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            &digest
        ));
    }

    #[test]
    fn wrong_secret_or_body_fails() {
        let digest = parse_header(Some(&sign(b"secret", b"body"))).unwrap();
        assert!(verifies(b"secret", b"body", &digest));
        assert!(!verifies(b"other", b"body", &digest));
        assert!(!verifies(b"secret", b"body!", &digest));
        assert!(!verifies(b"", b"body", &digest));
    }

    #[test]
    fn headers_must_be_well_formed() {
        assert_eq!(parse_header(None), Err(SignatureError::Missing));
        assert_eq!(
            parse_header(Some("sha1=abcd")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            parse_header(Some("sha256=abcd")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            parse_header(Some(&format!("sha256={}", "zz".repeat(32)))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            parse_header(Some(&format!("sha256=aé{}", "b".repeat(61)))),
            Err(SignatureError::Malformed),
            "64 bytes, but not 64 hex digits: refused, not a panic"
        );
        assert_eq!(
            parse_header(Some(&format!("sha256={}", "ab".repeat(32))))
                .unwrap()
                .len(),
            32
        );
    }
}
