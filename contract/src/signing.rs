//! Who made a model or a policy: ed25519 signatures that travel with them through the registry.
//!
//! The store's roles keep an edge's token from publishing; signatures keep the store itself
//! (its database, its operator tokens) from being enough to change what edges serve. The trainer
//! signs what it publishes with a key only the publishing side holds; each edge verifies against
//! the public keys it trusts (a Spin variable) before serving, and keeps what it serves when a
//! signature is missing or wrong.
//!
//! What is signed is the exact bytes (the model file, the policy's TOML text) behind a label
//! naming the kind, so a policy's signature can never pass as a model's. The text forms are
//! `ed25519:<64 hex>` for a public key, `ed25519-secret:<64 hex>` for a secret key (the 32-byte
//! seed) and `ed25519:<key hex>:<signature hex>` for a signature: the signature names its key, so
//! an edge can say which key it does not trust.

use ed25519_dalek::Signer;

/// What a signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// A model file.
    Model,
    /// A rule policy's TOML text.
    Policy,
}

impl Signed {
    fn label(self) -> &'static [u8] {
        match self {
            Signed::Model => b"secureflow model v1\0",
            Signed::Policy => b"secureflow policy v1\0",
        }
    }

    fn message(self, bytes: &[u8]) -> Vec<u8> {
        [self.label(), bytes].concat()
    }

    /// `model` or `policy`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Signed::Model => "model",
            Signed::Policy => "policy",
        }
    }
}

/// Why a signature is refused, or a key cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Nothing signed it, and unsigned ones are not accepted.
    #[error("unsigned (this edge accepts only signed ones)")]
    Unsigned,
    /// The text is not a signature.
    #[error("the signature is not `ed25519:<key hex>:<signature hex>`")]
    Malformed,
    /// Signed by a key this edge does not trust.
    #[error("signed by ed25519:{0}, which this edge does not trust")]
    UntrustedKey(String),
    /// The signature does not match the bytes (tampered with, or another file's).
    #[error("the signature by ed25519:{0} does not match the bytes (tampered or mixed up)")]
    Mismatch(String),
    /// A key's text is not a key.
    #[error("not an ed25519 key: {0}")]
    BadKey(String),
}

/// A public key an edge trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ed25519:{}", hex(self.0.as_bytes()))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = SignatureError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SignatureError::BadKey(short(text));
        let bytes: [u8; 32] = text
            .trim()
            .strip_prefix("ed25519:")
            .and_then(unhex)
            .ok_or_else(bad)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad())
    }
}

/// A signing key (the publishing side's secret).
pub struct SecretKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        write!(f, "SecretKey({})", self.public())
    }
}

impl std::str::FromStr for SecretKey {
    type Err = SignatureError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let seed: [u8; 32] = text
            .trim()
            .strip_prefix("ed25519-secret:")
            .and_then(unhex)
            .ok_or_else(|| {
                SignatureError::BadKey("a secret key is `ed25519-secret:<64 hex>`".into())
            })?;
        Ok(SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }
}

impl SecretKey {
    /// The key from 32 random bytes (the caller draws them from the OS).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Its text form, for the key file.
    pub fn to_text(&self) -> String {
        format!("ed25519-secret:{}", hex(&self.0.to_bytes()))
    }

    /// The public key edges are given.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The signature of `bytes` as `what`, in its text form.
    pub fn sign(&self, what: Signed, bytes: &[u8]) -> String {
        let signature = self.0.sign(&what.message(bytes));
        format!(
            "ed25519:{}:{}",
            hex(self.0.verifying_key().as_bytes()),
            hex(&signature.to_bytes())
        )
    }
}

/// Parses a comma- or whitespace-separated list of public keys (a Spin variable).
pub fn parse_keys(text: &str) -> Result<Vec<PublicKey>, SignatureError> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// Checks `signature` (its text form; None = unsigned) of `bytes` as `what` against `trusted`.
/// Returns the key that signed, or None for an unsigned one that `accept_unsigned` lets pass.
pub fn verify(
    what: Signed,
    bytes: &[u8],
    signature: Option<&str>,
    trusted: &[PublicKey],
    accept_unsigned: bool,
) -> Result<Option<PublicKey>, SignatureError> {
    let Some(text) = signature.map(str::trim).filter(|s| !s.is_empty()) else {
        return if accept_unsigned {
            Ok(None)
        } else {
            Err(SignatureError::Unsigned)
        };
    };
    let mut parts = text.strip_prefix("ed25519:").unwrap_or("").split(':');
    let (Some(key), Some(sig), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SignatureError::Malformed);
    };
    let key_bytes: [u8; 32] = unhex(key).ok_or(SignatureError::Malformed)?;
    let sig_bytes: [u8; 64] = unhex(sig).ok_or(SignatureError::Malformed)?;
    let Some(signer) = trusted.iter().find(|k| k.0.as_bytes() == &key_bytes) else {
        return Err(SignatureError::UntrustedKey(short(key)));
    };
    let signature = ed25519_dalek::Signature::from_bytes(&sig_bytes);
    // `verify_strict`: no malleable or small-order variants of a valid signature pass.
    signer
        .0
        .verify_strict(&what.message(bytes), &signature)
        .map_err(|_| SignatureError::Mismatch(short(key)))?;
    Ok(Some(signer.clone()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The first 16 characters, for messages that name a key.
fn short(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(16) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn a_signature_passes_only_for_its_bytes_its_kind_and_a_trusted_key() {
        let (alice, mallory) = (key(1), key(2));
        let trusted = [alice.public()];
        let model = b"model bytes".as_slice();
        let sig = alice.sign(Signed::Model, model);
        let ok = verify(Signed::Model, model, Some(&sig), &trusted, false).unwrap();
        assert_eq!(ok, Some(alice.public()));
        // Other bytes, the other kind, another key, garbage, nothing.
        let err = |bytes: &[u8], what, sig: Option<&str>| {
            verify(what, bytes, sig, &trusted, false).unwrap_err()
        };
        assert!(matches!(
            err(b"model bytez", Signed::Model, Some(&sig)),
            SignatureError::Mismatch(_)
        ));
        assert!(matches!(
            err(model, Signed::Policy, Some(&sig)),
            SignatureError::Mismatch(_)
        ));
        let forged = mallory.sign(Signed::Model, model);
        assert!(matches!(
            err(model, Signed::Model, Some(&forged)),
            SignatureError::UntrustedKey(_)
        ));
        // Mallory's signature under Alice's name: a mismatch.
        let relabelled = format!(
            "ed25519:{}:{}",
            hex(alice.public().0.as_bytes()),
            forged.rsplit(':').next().unwrap()
        );
        assert!(matches!(
            err(model, Signed::Model, Some(&relabelled)),
            SignatureError::Mismatch(_)
        ));
        for garbage in ["x", "ed25519:00:00", "ed25519:zz", &format!("{sig}:00")] {
            assert_eq!(
                err(model, Signed::Model, Some(garbage)),
                SignatureError::Malformed
            );
        }
        assert_eq!(err(model, Signed::Model, None), SignatureError::Unsigned);
        assert_eq!(
            err(model, Signed::Model, Some(" ")),
            SignatureError::Unsigned
        );
        assert_eq!(verify(Signed::Model, model, None, &trusted, true), Ok(None));
        // Accepting unsigned ones does not let a bad signature through.
        assert!(verify(Signed::Model, model, Some(&forged), &trusted, true).is_err());
    }

    #[test]
    fn keys_round_trip_through_text() {
        let k = key(7);
        let again: SecretKey = k.to_text().parse().unwrap();
        assert_eq!(again.public(), k.public());
        let public = k.public().to_string();
        assert_eq!(public.parse::<PublicKey>().unwrap(), k.public());
        let keys = parse_keys(&format!(" {public}, {}\n", key(8).public())).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(parse_keys("ed25519:abcd").is_err());
        assert!(parse_keys("").unwrap().is_empty());
        assert!(
            format!("{k:?}").starts_with("SecretKey(ed25519:"),
            "no secret in Debug"
        );
        assert!("ed25519-secret:00".parse::<SecretKey>().is_err());
    }
}
