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

/// One page of an export: values in key order; `next` is the key to ask after for the
/// next page (None: this was the last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryExportPage {
    pub entries: Vec<MemoryEntry>,
    pub next: Option<String>,
}

/// The most value bytes one export page carries (pages stay well inside a frame).
pub const MAX_EXPORT_PAGE_BYTES: u64 = 1024 * 1024;

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
