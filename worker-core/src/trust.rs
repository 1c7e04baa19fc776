//! Which publishers the edge believes: the public keys of `trusted_keys` and whether unsigned
//! models and policies pass (`accept_unsigned`). Checked when the edge's refresh downloads a
//! model or a policy, before anything is stored; a refusal keeps what is served and is
//! reported in `/api/health` (`last_refresh_error`). See [`contract::signing`].

use contract::signing::{self, PublicKey, Signed};

/// The edge's trust settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trust {
    pub(crate) keys: Vec<PublicKey>,
    pub(crate) accept_unsigned: bool,
}

impl Default for Trust {
    /// No keys: everything unsigned passes (the behaviour before signatures).
    fn default() -> Self {
        Trust {
            keys: Vec::new(),
            accept_unsigned: true,
        }
    }
}

impl Trust {
    /// Checks `bytes` and their signature; the error names what and why.
    pub(crate) fn check(
        &self,
        what: Signed,
        name: &str,
        bytes: &[u8],
        signature: Option<&str>,
    ) -> Result<(), String> {
        signing::verify(what, bytes, signature, &self.keys, self.accept_unsigned)
            .map(|_| ())
            .map_err(|e| format!("{} {name} refused: {e}", what.name()))
    }

    /// Whether a copy stored by an earlier refresh (verified then) is still acceptable under
    /// these settings: its signature's key is still trusted, or unsigned ones still pass. Cheap
    /// (no cryptography), so an instance start can ask; a key removed from `trusted_keys`
    /// stops what it signed at the next instance start and refresh.
    pub(crate) fn admits_stored(&self, signature: Option<&str>) -> bool {
        match signature {
            None => self.accept_unsigned,
            Some(s) => self.keys.iter().any(|k| s.starts_with(&format!("{k}:"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::signing::SecretKey;

    #[test]
    fn a_stored_copy_passes_only_while_its_key_is_trusted() {
        let (old, new) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let by_old = old.sign(Signed::Model, b"m");
        let both = Trust {
            keys: vec![old.public(), new.public()],
            accept_unsigned: false,
        };
        assert!(both.admits_stored(Some(&by_old)));
        assert!(!both.admits_stored(None));
        // The old key removed (rotation done): what it signed is no longer served.
        let rotated = Trust {
            keys: vec![new.public()],
            accept_unsigned: false,
        };
        assert!(!rotated.admits_stored(Some(&by_old)));
        assert!(
            rotated
                .check(Signed::Model, "m", b"m", Some(&by_old))
                .is_err()
        );
        assert!(Trust::default().admits_stored(None));
        let e = rotated
            .check(Signed::Model, "if1-1", b"m", None)
            .unwrap_err();
        assert_eq!(
            e,
            "model if1-1 refused: unsigned (this edge accepts only signed ones)"
        );
    }
}
