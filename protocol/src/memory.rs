//! What operators see of an agent's private memory: how much it holds (never the
//! values), an admin's export (the values, audited as a reveal), and what a handoff
//! copied from one agent to another.

use crate::secret::SecretValue;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// tenant/name.
    pub agent: String,
    pub keys: u64,
    /// Bytes of values held.
    pub bytes: u64,
    /// None: never written.
    pub last_write_ms: Option<u64>,
    pub max_keys: u64,
    pub max_bytes: u64,
    pub max_value_bytes: u64,
}

/// One value, as an export gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEntry {
    pub key: String,
    /// `json`, `text` or `bytes`.
    pub kind: String,
    pub value: SecretValue,
    pub updated_ms: u64,
}

/// What a handoff copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub from: String,
    pub to: String,
    pub keys: Vec<String>,
    pub bytes: u64,
    /// The audit record that names it.
    pub audit_seq: u64,
}
