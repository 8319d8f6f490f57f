//! AES-256-GCM with associated data, for wrapping keys and sealing values. A sealed blob is
//! `nonce (12 bytes, fresh and random) | ciphertext | tag`. The associated data names what
//! the blob is (which tenant, agent, credential and version; which key), so a blob moved
//! to another row, agent or name fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

pub type Key32 = Zeroizing<[u8; 32]>;

pub fn random_key() -> Key32 {
    Zeroizing::new(rand::random::<[u8; 32]>())
}

/// Encrypts `msg` under `key`, bound to `aad`.
pub fn seal(key: &[u8; 32], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let nonce: [u8; 12] = rand::random();
    // Encryption with a valid key and nonce cannot fail for inputs under 64 GiB.
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg, aad })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Decrypts a sealed blob; None if it was altered, moved, or sealed under another key.
pub fn open(key: &[u8; 32], blob: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < 12 + 16 {
        return None;
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(&blob[..12]),
            Payload {
                msg: &blob[12..],
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Opens a wrapped 32-byte key.
pub fn open_key(key: &[u8; 32], blob: &[u8], aad: &[u8]) -> Option<Key32> {
    let v = open(key, blob, aad)?;
    let arr: [u8; 32] = v.as_slice().try_into().ok()?;
    Some(Zeroizing::new(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_to_key_and_associated_data() {
        let k = random_key();
        let blob = seal(&k, b"secret", b"t|a|name|1");
        assert_eq!(
            open(&k, &blob, b"t|a|name|1").unwrap().as_slice(),
            b"secret"
        );
        assert!(
            open(&k, &blob, b"t|b|name|1").is_none(),
            "moved to another agent"
        );
        assert!(
            open(&k, &blob, b"t|a|name|2").is_none(),
            "moved to another version"
        );
        assert!(
            open(&random_key(), &blob, b"t|a|name|1").is_none(),
            "another key"
        );
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 1;
            assert!(
                open(&k, &b, b"t|a|name|1").is_none(),
                "flipped byte {i} accepted"
            );
        }
        assert_ne!(
            seal(&k, b"secret", b"x"),
            seal(&k, b"secret", b"x"),
            "fresh nonces"
        );
    }
}
