//! Vault and credential wire types. Metadata only: a credential's value travels solely as
//! a `SecretValue` (into the daemon on set/rotate, out to its own agent's gateway).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaultState {
    /// `vault init` has not been run.
    Uninitialized,
    /// Initialised, but the master key is not in the keyring: credentialed agents wait.
    Sealed,
    Unsealed,
}

impl VaultState {
    pub fn as_str(self) -> &'static str {
        match self {
            VaultState::Uninitialized => "uninitialized",
            VaultState::Sealed => "SEALED",
            VaultState::Unsealed => "unsealed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultStatus {
    pub state: VaultState,
    /// Data keys; the newest encrypts new values.
    pub data_keys: u32,
    pub active_key: Option<u64>,
    /// Encryptions done with the active data key (fresh random nonce each).
    pub active_key_uses: u64,
    pub credentials: u64,
    /// Where the master key lives.
    pub keyring: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialVersion {
    pub version: u32,
    pub created_ms: u64,
    /// When it stopped being usable (revoked, or replaced and past its grace period).
    pub revoked_ms: Option<u64>,
    /// A revocation scheduled for the end of a rotation's grace period.
    pub revoke_at_ms: Option<u64>,
    pub data_key: u64,
    /// HMAC-SHA256 of the value (first 16 hex), to tell values apart without seeing them.
    pub value_hmac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    pub tenant: String,
    pub agent: String,
    pub name: String,
    pub current_version: Option<u32>,
    pub created_ms: u64,
    pub last_rotated_ms: Option<u64>,
    pub last_delivered_ms: Option<u64>,
    pub versions: Vec<CredentialVersion>,
}
