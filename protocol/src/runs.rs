//! Runs on the wire: one unit of work for one agent — who asked for it and how (the
//! trigger), its input, its state from queued to an end, and its outcome. The daemon keeps
//! them (`daemon/src/runs`); the CLI and the console read them; a service agent takes its
//! runs and answers them through its local API (`GET /v1/runs/next`, `POST
//! /v1/runs/{id}/result`).

use serde::{Deserialize, Serialize};

/// The largest run input (JSON text) accepted, and the largest result an agent may post.
pub const MAX_RUN_INPUT: usize = 64 * 1024;
pub const MAX_RUN_RESULT: usize = 256 * 1024;
/// The longest `GET /v1/runs/next` waits for a run.
pub const MAX_NEXT_WAIT_MS: u64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed-out",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        [
            RunState::Queued,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::TimedOut,
            RunState::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether the run has ended (nothing changes it any more).
    pub fn ended(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }

    /// Ended without success (what `runs list --failed` shows).
    pub fn failed(self) -> bool {
        matches!(self, RunState::Failed | RunState::TimedOut)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run as the CLI and the console show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub id: u64,
    pub tenant: String,
    pub project: String,
    pub agent: String,
    /// `cli`, `api`, `webhook` or `schedule`.
    pub trigger: String,
    /// Who asked: the operator (or token) for `cli`/`api`, the subscription otherwise.
    pub requested_by: String,
    pub state: RunState,
    /// The input, as JSON text.
    pub input_json: String,
    /// What the agent answered (JSON text), when it did.
    pub result_json: Option<String>,
    /// Why it failed, timed out or was cancelled.
    pub error: Option<String>,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// When a running run times out.
    pub deadline_ms: Option<u64>,
}

impl RunView {
    /// `tenant/agent`.
    pub fn agent_ref(&self) -> String {
        format!("{}/{}", self.tenant, self.agent)
    }
}

/// What `runs list` asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunQuery {
    pub agent: Option<crate::AgentRef>,
    /// Only runs that failed or timed out.
    pub failed: bool,
    /// Only runs created at or after (Unix ms).
    pub since_ms: Option<u64>,
    /// At most this many, newest first (0: 100).
    pub limit: u32,
}
