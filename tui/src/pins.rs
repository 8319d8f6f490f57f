//! The client checks the audit log itself: like ssh's known_hosts, it pins the daemon's
//! checkpoint signing key at first contact (per place it connects to: the context, or the
//! socket's path), verifies every signed checkpoint it receives with that key (Ed25519,
//! here, not the daemon's word), keeps the newest, and calls it out when a later one is
//! older than what it kept (AUDIT ROLLBACK) or signed by another key (KEY CHANGED).
//! Pins live in `$XDG_STATE_HOME/agenfleet/pins/` (else `~/.local/state/…`).

use agenfleet_protocol::Checkpoint;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// What was pinned for one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Where the client connected (a context's name, or a socket's path).
    pub place: String,
    /// The signing key seen at first contact (hex).
    pub public_key: String,
    pub first_seen_ms: u64,
    /// The newest checkpoint verified so far.
    pub newest: Checkpoint,
}

/// What a checkpoint tells about the log, against the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No pin yet: this key is pinned now.
    Pinned,
    /// Same key, the same checkpoint as kept.
    Ok,
    /// Same key, a newer checkpoint: kept once the caller has seen that the record this
    /// client verified before is still in the log with the same hash (`check_live`).
    Advance { seq: u64, hash: String },
    /// The log went back: a checkpoint older than one seen before, or another head at
    /// the same record.
    Rollback(String),
    /// Signed by a key that is not the pinned one.
    KeyChanged(String),
    /// The signature does not verify (whatever the key).
    BadSignature(String),
}

impl Verdict {
    /// The banner (None when all is well).
    pub fn alarm(&self) -> Option<String> {
        match self {
            Verdict::Pinned | Verdict::Ok | Verdict::Advance { .. } => None,
            Verdict::Rollback(why) => Some(format!("AUDIT ROLLBACK: {why}")),
            Verdict::KeyChanged(why) => Some(format!("KEY CHANGED: {why}")),
            Verdict::BadSignature(why) => Some(format!("AUDIT SIGNATURE BAD: {why}")),
        }
    }
}

/// The place a target is known by: its context, else its socket path.
pub fn place_of(context: Option<&str>, endpoint: &crate::contexts::Endpoint) -> String {
    match context {
        Some(c) => format!("context:{c}"),
        None => endpoint.to_string(),
    }
}

/// Where pins are kept: `$XDG_STATE_HOME/agenfleet/pins`, else `~/.local/state/…`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("agenfleet")
        .join("pins")
}

/// The pins in one directory.
#[derive(Debug, Clone)]
pub struct Pins {
    pub dir: PathBuf,
}

impl Default for Pins {
    fn default() -> Pins {
        Pins { dir: default_dir() }
    }
}

impl Pins {
    /// The pin file of `place` (named by a digest: places are paths and names).
    pub fn file_of(&self, place: &str) -> PathBuf {
        let h = hex::encode(Sha256::digest(place.as_bytes()));
        self.dir.join(format!("{}.json", &h[..32]))
    }

    pub fn load(&self, place: &str) -> Option<Pin> {
        let text = std::fs::read_to_string(self.file_of(place)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save(&self, pin: &Pin) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.file_of(&pin.place);
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&serde_json::to_vec_pretty(pin).map_err(std::io::Error::other)?)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Forgets the pin of `place` (the next contact pins again): after a legitimate key
    /// change or a restore from backup. Answers whether there was one.
    pub fn forget(&self, place: &str) -> std::io::Result<bool> {
        match std::fs::remove_file(self.file_of(place)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Checks `cp` against the pin of `place` (pinning it at first contact, keeping it as
    /// the newest when it is), and says what it found.
    pub fn check(&self, place: &str, cp: &Checkpoint, now_ms: u64) -> Verdict {
        if let Err(e) = verify_signature(cp) {
            return Verdict::BadSignature(e);
        }
        let Some(pin) = self.load(place) else {
            let pin = Pin {
                place: place.to_string(),
                public_key: cp.public_key.clone(),
                first_seen_ms: now_ms,
                newest: cp.clone(),
            };
            if let Err(e) = self.save(&pin) {
                tracing::warn!("cannot keep the audit pin: {e}");
            }
            return Verdict::Pinned;
        };
        if cp.public_key != pin.public_key {
            return Verdict::KeyChanged(format!(
            "checkpoint {} is signed by key {}…, not the key {}… pinned for {place} (`agenfleet audit pin --forget` if this change is yours)",
            cp.seq,
            short(&cp.public_key),
            short(&pin.public_key)
        ));
        }
        let kept = &pin.newest;
        if cp.seq < kept.seq {
            return Verdict::Rollback(format!(
            "the daemon's newest signed checkpoint is record {}, older than record {} this client verified before",
            cp.seq, kept.seq
        ));
        }
        if cp.seq == kept.seq && cp.hash != kept.hash {
            return Verdict::Rollback(format!(
                "record {} has another head than this client verified before",
                cp.seq
            ));
        }
        if cp.seq > kept.seq {
            return Verdict::Advance {
                seq: kept.seq,
                hash: kept.hash.clone(),
            };
        }
        Verdict::Ok
    }

    /// Keeps `cp` as the newest checkpoint verified for `place`.
    pub fn advance(&self, place: &str, cp: &Checkpoint) {
        if let Some(mut pin) = self.load(place) {
            if cp.seq > pin.newest.seq && cp.public_key == pin.public_key {
                pin.newest = cp.clone();
                if let Err(e) = self.save(&pin) {
                    tracing::warn!("cannot keep the audit pin: {e}");
                }
            }
        }
    }

    /// `check`, and for a newer checkpoint the record this client verified before asked
    /// of the daemon again: another hash at that record is a rewritten log (a rollback
    /// that grew back past the kept checkpoint). A record retention removed cannot be
    /// asked about and is taken as it is. `remember`: keep `cp` as the newest.
    pub async fn check_live(
        &self,
        conn: &crate::client::Conn,
        place: &str,
        cp: &Checkpoint,
        remember: bool,
    ) -> Verdict {
        let (seq, hash) = match self.check(place, cp, agenfleet_protocol::now_ms()) {
            Verdict::Advance { seq, hash } => (seq, hash),
            other => return other,
        };
        let q = agenfleet_protocol::AuditQuery {
            after_seq: seq.saturating_sub(1),
            limit: 1,
            ..Default::default()
        };
        if let Ok(Ok(found)) = conn.client.audit_query(conn.ctx(), q, 0).await {
            if let Some(e) = found.first().filter(|e| e.seq == seq) {
                if e.hash != hash {
                    return Verdict::Rollback(format!(
                        "record {seq} now has another hash than this client verified before: the log was rewritten"
                    ));
                }
            }
        }
        if remember {
            self.advance(place, cp);
        }
        Verdict::Ok
    }
}

/// Verifies the checkpoint's signature with the key it names.
pub fn verify_signature(cp: &Checkpoint) -> Result<(), String> {
    let key: [u8; 32] = hex::decode(&cp.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("checkpoint {}: malformed public key", cp.seq))?;
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|e| format!("checkpoint {}: bad public key: {e}", cp.seq))?;
    let sig: [u8; 64] = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("checkpoint {}: malformed signature", cp.seq))?;
    key.verify(
        &Checkpoint::message(cp.seq, &cp.hash, cp.time_ms),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| format!("checkpoint {}: the signature does not verify", cp.seq))
}

fn short(k: &str) -> &str {
    &k[..k.len().min(16)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(key: &SigningKey, seq: u64, hash: &str) -> Checkpoint {
        let sig = key.sign(&Checkpoint::message(seq, hash, 1000 + seq));
        Checkpoint {
            seq,
            hash: hash.into(),
            time_ms: 1000 + seq,
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    #[test]
    fn pins_at_first_contact_then_calls_out_rollback_forks_key_changes_and_forgeries() {
        let state = tempfile::tempdir().expect("tempdir");
        let pins = Pins {
            dir: state.path().join("pins"),
        };
        let (k1, k2) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let place = "context:test";
        assert_eq!(
            pins.check(place, &signed(&k1, 10, "aa"), 1),
            Verdict::Pinned
        );
        assert_eq!(pins.check(place, &signed(&k1, 10, "aa"), 2), Verdict::Ok);
        assert_eq!(
            pins.check(place, &signed(&k1, 20, "bb"), 3),
            Verdict::Advance {
                seq: 10,
                hash: "aa".into()
            }
        );
        pins.advance(place, &signed(&k1, 20, "bb"));
        assert_eq!(pins.load(place).map(|p| p.newest.seq), Some(20));
        assert!(matches!(
            pins.check(place, &signed(&k1, 15, "cc"), 4),
            Verdict::Rollback(_)
        ));
        assert!(matches!(
            pins.check(place, &signed(&k1, 20, "dd"), 4),
            Verdict::Rollback(_)
        ));
        assert!(matches!(
            pins.check(place, &signed(&k2, 30, "ee"), 5),
            Verdict::KeyChanged(_)
        ));
        let mut forged = signed(&k1, 40, "ff");
        forged.hash = "00".into();
        assert!(matches!(
            pins.check(place, &forged, 6),
            Verdict::BadSignature(_)
        ));
        // What was refused changed nothing; forgetting re-pins at the next contact.
        assert_eq!(pins.load(place).map(|p| p.newest.seq), Some(20));
        assert!(pins.forget(place).expect("forget"));
        assert_eq!(
            pins.check(place, &signed(&k2, 30, "ee"), 7),
            Verdict::Pinned
        );
    }
}
