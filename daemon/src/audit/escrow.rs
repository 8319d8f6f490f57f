//! Where the audit signing key comes from, and its copy in the vault. The key lives in
//! the kernel keyring, which forgets it at a reboot and which a new host does not have;
//! without a copy, the next daemon would sign with a new key and the checkpoints before
//! and after could not be checked as one log. So, once the vault is open, the key is also
//! sealed in the vault under the master key (`Vault::escrow_audit_key`, which a backup
//! carries); a daemon whose keyring lacks it writes unsigned until `vault unseal` gives it
//! back, then signs a checkpoint over everything written meanwhile — with the same key.

use super::checkpoint::{key_name, Signer};
use super::AuditLog;
use crate::vault::Vault;

fn describe(s: &Signer) -> String {
    format!(
        "ed25519 key {}… in the kernel keyring",
        &s.public_hex()[..16]
    )
}

fn seed_of(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

/// The signing key to open the log with, and how it is described in `audit status`.
pub fn signer_at_start(vault: &Vault, instance: &str) -> (Option<Signer>, String) {
    let name = key_name(instance);
    match crate::keyring::get(&name) {
        Ok(Some(seed)) => match seed_of(&seed) {
            Some(seed) => {
                let s = Signer::from_seed(&seed);
                let d = describe(&s);
                (Some(s), d)
            }
            None => {
                tracing::error!(bytes = seed.len(), "checkpoints will be UNSIGNED: the keyring's audit signing key has the wrong size");
                (
                    None,
                    format!("unsigned: keyring entry {name} holds {} bytes", seed.len()),
                )
            }
        },
        Ok(None) if vault.has_audit_key() => match vault.audit_key() {
            Some(seed) => {
                if let Err(e) = crate::keyring::set(&name, seed.as_slice()) {
                    tracing::warn!(error = %e, "cannot put the audit signing key back in the keyring");
                }
                let s = Signer::from_seed(&seed);
                tracing::info!("the audit signing key came back from the vault");
                let d = describe(&s);
                (Some(s), d)
            }
            None => {
                tracing::warn!("checkpoints wait for the vault: the audit signing key is sealed in it (`agenfleet vault unseal`)");
                (
                    None,
                    "waiting: the signing key is sealed in the vault; checkpoints resume at `agenfleet vault unseal`".into(),
                )
            }
        },
        // No key anywhere: the first start (or a vault that never held one) makes it.
        Ok(None) => match Signer::from_keyring(&name) {
            Ok(s) => {
                let d = describe(&s);
                (Some(s), d)
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoints will be UNSIGNED: no audit signing key");
                (None, format!("unsigned: {e}"))
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "checkpoints will be UNSIGNED: the keyring is not usable");
            (None, format!("unsigned: {e}"))
        }
    }
}

/// What `sync` did, for the audit trail.
pub enum Synced {
    Nothing,
    /// The log got its key back from the vault (public key).
    Restored(String),
    /// The key was sealed into the vault (public key).
    Escrowed(String),
}

/// After the vault opened (at start, `vault init`, `vault unseal`): a log waiting for its
/// key gets it from the vault; a key the vault does not hold yet is sealed into it.
pub fn sync(vault: &Vault, audit: &AuditLog, instance: &str) -> Result<Synced, String> {
    let name = key_name(instance);
    if !audit.is_signed() {
        let Some(seed) = vault.audit_key() else {
            return Ok(Synced::Nothing);
        };
        if let Err(e) = crate::keyring::set(&name, seed.as_slice()) {
            tracing::warn!(error = %e, "cannot put the audit signing key back in the keyring");
        }
        let s = Signer::from_seed(&seed);
        let public = s.public_hex();
        let d = describe(&s);
        audit.set_signer(s, d);
        return Ok(Synced::Restored(public));
    }
    if vault.state() != agenfleet_protocol::VaultState::Unsealed || vault.has_audit_key() {
        return Ok(Synced::Nothing);
    }
    let seed = crate::keyring::get(&name)
        .map_err(|e| e.to_string())?
        .and_then(|b| seed_of(&b))
        .ok_or_else(|| format!("the keyring has no usable {name} to seal into the vault"))?;
    vault.escrow_audit_key(&seed).map_err(|e| e.to_string())?;
    Ok(Synced::Escrowed(Signer::from_seed(&seed).public_hex()))
}
