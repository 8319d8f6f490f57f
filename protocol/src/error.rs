//! Errors that cross the wire: a stable code (mapped by the CLI to documented exit codes)
//! and a message written for the person who has to act on it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable error codes. The numbers are part of the protocol and of the CLI's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request named something invalid (a spec field, an argument).
    InvalidArgument,
    /// The named object does not exist (or belongs to a tenant the caller cannot see).
    NotFound,
    /// An object with that name exists already.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// The object is not in a state that allows this (e.g. reset of a running agent).
    FailedPrecondition,
    /// The container engine (or another dependency) is unreachable right now.
    Unavailable,
    /// Client and daemon speak different protocol versions.
    VersionMismatch,
    /// A bug or an unexpected environment failure in the daemon.
    Internal,
}

impl ErrorCode {
    /// The CLI's exit code for this error (documented in the README).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::InvalidArgument => 6,
            ErrorCode::NotFound => 5,
            ErrorCode::AlreadyExists => 7,
            ErrorCode::PermissionDenied => 4,
            ErrorCode::FailedPrecondition => 8,
            ErrorCode::Unavailable => 9,
            ErrorCode::VersionMismatch => 10,
            ErrorCode::Internal => 70,
        }
    }

    /// Short stable name used in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error answered by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_not_clap_usage() {
        let all = [
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::PermissionDenied,
            ErrorCode::FailedPrecondition,
            ErrorCode::Unavailable,
            ErrorCode::VersionMismatch,
            ErrorCode::Internal,
        ];
        let mut seen = std::collections::HashSet::new();
        for c in all {
            assert!(seen.insert(c.exit_code()), "duplicate exit code for {c:?}");
            assert!(c.exit_code() > 2, "{c:?} collides with success/usage codes");
        }
    }
}
