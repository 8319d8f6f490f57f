//! Audit wire types: the event every record carries, entries as read back, queries,
//! the log's status, signed checkpoints and verification reports.

use serde::{Deserialize, Serialize};

/// What happened: who did what to which tenant/agent, and how it ended. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// `root (uid 0)`, `alice (uid 1001)`, or `agenfleetd` for the daemon itself.
    pub actor: String,
    /// Dotted name: `agent.create`, `agent.exited`, `rpc.refused`, `daemon.start`, …
    pub action: String,
    pub tenant: Option<String>,
    pub agent: Option<String>,
    /// `requested`, `ok`, `failed`, `refused`, or an observation (`observed`).
    pub outcome: String,
    /// A sentence with the particulars (exit code, reason, …).
    pub detail: String,
}

/// One record as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: u64,
    /// SHA-256 of the record (hex); the next record chains to it.
    pub hash: String,
    pub event: AuditEvent,
}

/// A search: every given field must match; times are Unix ms, inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub agent: Option<String>,
    /// Exact action, or a prefix ending in `.` (`agent.`).
    pub action: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Only records after this sequence number.
    pub after_seq: u64,
    /// At most this many (the newest when `newest` is set).
    pub limit: u32,
    pub newest: bool,
}

/// A signed statement: "record `seq` has hash `hash`", by the daemon's audit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub time_ms: u64,
    /// Ed25519 public key (hex) that made the signature.
    pub public_key: String,
    /// Ed25519 signature (hex) over `agenfleet-audit-checkpoint|seq|hash|time_ms`.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes that are signed.
    pub fn message(seq: u64, hash: &str, time_ms: u64) -> Vec<u8> {
        format!("agenfleet-audit-checkpoint|{seq}|{hash}|{time_ms}").into_bytes()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    /// False once the log has failed or found damage: mutations are refused.
    pub writable: bool,
    /// Why it is not writable (names the first bad record, or the I/O error).
    pub problem: Option<String>,
    pub head_seq: u64,
    pub head_hash: String,
    /// Records found valid when the daemon started, up to this sequence number.
    pub verified_to: u64,
    pub last_checkpoint: Option<Checkpoint>,
    /// `ed25519 key in the kernel keyring`, or why checkpoints are unsigned.
    pub signing: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub valid: bool,
    pub records: u64,
    pub bytes: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// The first bad record and what is wrong with it.
    pub first_bad: Option<String>,
    /// A partly written record at the end (not yet truncated).
    pub torn_tail: Option<String>,
    pub checkpoints_verified: u64,
    /// The result of checking a checkpoint the caller kept (rollback/truncation).
    pub checkpoint_check: Option<String>,
    pub seconds: f64,
}
