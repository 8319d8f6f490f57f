//! The short histories the console draws where people would rather look than read: the
//! fleet's last ten minutes in 10-second buckets (`Fleet::pulse`) and one agent's CPU and
//! memory over the same span (`Fleet::agent_history`). The daemon keeps them bounded in
//! memory; they are lost with it (the audit log and the metrics are the records).

use serde::{Deserialize, Serialize};

/// Width of one bucket.
pub const BUCKET_MS: u64 = 10_000;
/// Buckets kept and answered: ten minutes.
pub const BUCKETS: usize = 60;

/// One closed bucket of the fleet the caller sees, summed over its tenants and projects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulseBucket {
    /// Start of the bucket (Unix ms); it covers `BUCKET_MS` from there.
    pub start_ms: u64,
    /// Agents in each state when the bucket closed.
    pub running: u32,
    pub backing_off: u32,
    pub failed: u32,
    /// Stopped by an operator, pending, or unknown (engine unreachable).
    pub other: u32,
    /// Restarts by the supervisor (after an exit) in the bucket.
    pub restarts: u32,
    /// Tool-call decisions in the bucket by the policies' verdict (an escalated call is
    /// counted as escalated whatever the person decided).
    pub allowed: u32,
    pub denied: u32,
    pub escalated: u32,
    /// Incidents opened in the bucket (not the signals folded into open ones).
    pub incidents_opened: u32,
    /// Model tokens (in + out) of the calls that ended in the bucket.
    pub tokens: u64,
}

/// The fleet's last `BUCKETS` closed buckets, oldest first (every bucket present: one
/// where nothing happened is zeros).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulse {
    pub bucket_ms: u64,
    pub buckets: Vec<PulseBucket>,
}

impl Pulse {
    /// Start of the newest closed bucket (0: none).
    pub fn newest_ms(&self) -> u64 {
        self.buckets.last().map(|b| b.start_ms).unwrap_or(0)
    }
}

/// One agent's peaks in one bucket (None: not running then, or no sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentPoint {
    pub start_ms: u64,
    pub cpu_percent: Option<f32>,
    pub memory_bytes: Option<u64>,
}

/// One agent's last `BUCKETS` closed buckets, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentHistory {
    pub bucket_ms: u64,
    pub points: Vec<AgentPoint>,
}

impl AgentHistory {
    pub fn newest_ms(&self) -> u64 {
        self.points.last().map(|p| p.start_ms).unwrap_or(0)
    }
}
