//! Signed checkpoints: every N records or T seconds the writer signs (Ed25519) the current
//! sequence number and head hash with the audit key, which lives in the OS keyring (never
//! in the state dir), and appends the checkpoint to `checkpoints.jsonl`. A client that keeps
//! the last checkpoint it saw detects a log that was rolled back or truncated.

use agenfleet_protocol::Checkpoint;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use std::io::Write;
use std::path::Path;

pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
pub const PUBLIC_KEY_FILE: &str = "audit-signing.pub";
/// Where the log starts once retention removed its oldest segments: a checkpoint signed
/// for the last removed record (also in `checkpoints.jsonl`). The chain is checked from it.
pub const ANCHOR_FILE: &str = "anchor.json";

/// The keyring entry of the audit signing key of installation `instance`.
pub fn key_name(instance: &str) -> String {
    format!("audit-signing-{instance}")
}

/// The audit signing key.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(public {})", self.public_hex())
    }
}

impl Signer {
    /// Loads the key named `name` from the OS keyring, creating it on first use.
    pub fn from_keyring(name: &str) -> Result<Signer, crate::keyring::KeyError> {
        let seed =
            crate::keyring::load_or_create(name, 32, || rand::random::<[u8; 32]>().to_vec())?;
        let mut b = [0u8; 32];
        b.copy_from_slice(&seed);
        Ok(Signer {
            key: SigningKey::from_bytes(&b),
        })
    }

    /// The key whose seed is `seed` (from the keyring or the vault's escrow).
    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// A key that exists only in memory (tests and benchmarks).
    pub fn ephemeral() -> Signer {
        Signer {
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    pub fn sign(&self, seq: u64, hash: &str, time_ms: u64) -> Checkpoint {
        let sig = self.key.sign(&Checkpoint::message(seq, hash, time_ms));
        Checkpoint {
            seq,
            hash: hash.to_string(),
            time_ms,
            public_key: self.public_hex(),
            signature: hex::encode(sig.to_bytes()),
        }
    }
}

/// Checks a checkpoint's signature against the key it names (and, if given, the key
/// the caller trusts).
pub fn verify_signature(cp: &Checkpoint, trusted_key: Option<&str>) -> Result<(), String> {
    verify_signature_cached(cp, trusted_key, &mut None)
}

/// `verify_signature` for many checkpoints: the last public key parsed is kept in `cache`
/// (parsing one is a point decompression, about a third of a verification's cost).
pub fn verify_signature_cached(
    cp: &Checkpoint,
    trusted_key: Option<&str>,
    cache: &mut Option<(String, VerifyingKey)>,
) -> Result<(), String> {
    if let Some(k) = trusted_key {
        if k != cp.public_key {
            return Err(format!(
                "checkpoint {} was signed by key {}…, not the trusted key {}…",
                cp.seq,
                &cp.public_key[..cp.public_key.len().min(12)],
                &k[..k.len().min(12)]
            ));
        }
    }
    let key = match cache {
        Some((hex, key)) if *hex == cp.public_key => *key,
        _ => {
            let key_bytes: [u8; 32] = hex::decode(&cp.public_key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("checkpoint {}: malformed public key", cp.seq))?;
            let key = VerifyingKey::from_bytes(&key_bytes)
                .map_err(|e| format!("checkpoint {}: bad public key: {e}", cp.seq))?;
            *cache = Some((cp.public_key.clone(), key));
            key
        }
    };
    let sig_bytes: [u8; 64] = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("checkpoint {}: malformed signature", cp.seq))?;
    key.verify(
        &Checkpoint::message(cp.seq, &cp.hash, cp.time_ms),
        &Signature::from_bytes(&sig_bytes),
    )
    .map_err(|_| format!("checkpoint {}: the signature does not match", cp.seq))
}

/// Appends a checkpoint durably.
pub fn append(dir: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(CHECKPOINTS_FILE))?;
    let mut line = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}

/// The retention anchor in `dir`, if the log's start was removed.
pub fn load_anchor(dir: &Path) -> Result<Option<Checkpoint>, String> {
    let p = dir.join(ANCHOR_FILE);
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// Replaces the anchor durably (written aside, synced, renamed, the directory synced).
pub fn store_anchor(dir: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    let tmp = dir.join(format!("{ANCHOR_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(cp).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(ANCHOR_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The anchor as the chain's starting point: (sequence number, hash).
pub fn anchor_start(cp: &Checkpoint) -> Result<(u64, [u8; 32]), String> {
    let hash: [u8; 32] = hex::decode(&cp.hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "the retention anchor at record {} has a malformed hash",
                cp.seq
            )
        })?;
    Ok((cp.seq, hash))
}

/// Every checkpoint stored in `dir` (lines that do not parse are reported as errors).
pub fn load_all(dir: &Path) -> Result<Vec<Checkpoint>, String> {
    let p = dir.join(CHECKPOINTS_FILE);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Checkpoint>(line) {
            Ok(c) => out.push(c),
            // A torn last line (crash while appending) is not an attack; anything else is.
            Err(_) if i + 1 == text.lines().count() && !text.ends_with('\n') => {}
            Err(e) => return Err(format!("{} line {}: {e}", p.display(), i + 1)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let s = Signer::ephemeral();
        let cp = s.sign(10, "abcd", 5);
        verify_signature(&cp, Some(&s.public_hex())).unwrap();
        let mut forged = cp.clone();
        forged.seq = 11;
        assert!(verify_signature(&forged, None).is_err());
        let other = Signer::ephemeral();
        assert!(verify_signature(&cp, Some(&other.public_hex())).is_err());
        let mut bad_sig = cp;
        bad_sig.signature = "00".repeat(64);
        assert!(verify_signature(&bad_sig, None).is_err());
    }
}
