//! Connecting to the daemon: the socket path (flag, `AGENFLEET_SOCKET`, or the default),
//! the protocol handshake, deadlines, and the errors a person or a script sees — each with
//! its documented exit code.

use agenfleet_protocol::{
    transport, ApiError, FleetClient, Hello, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit codes that are not daemon error codes (those come from `ErrorCode::exit_code`).
pub const EXIT_NOT_RUNNING: i32 = 3;
pub const EXIT_TIMEOUT: i32 = 75;

/// An error for the person at the terminal (or the script): a message and an exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub exit_code: i32,
    /// Stable machine-readable code for `--json`.
    pub code: String,
    pub message: String,
}

impl CliError {
    pub fn new(exit_code: i32, code: &str, message: impl Into<String>) -> Self {
        CliError {
            exit_code,
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl From<ApiError> for CliError {
    fn from(e: ApiError) -> Self {
        CliError::new(e.code.exit_code(), e.code.as_str(), e.message)
    }
}

impl From<tarpc::client::RpcError> for CliError {
    fn from(e: tarpc::client::RpcError) -> Self {
        match e {
            tarpc::client::RpcError::DeadlineExceeded => CliError::new(
                EXIT_TIMEOUT,
                "timeout",
                "the daemon did not answer in time (raise --timeout, or check `agenfleetd`'s log)",
            ),
            other => CliError::new(
                EXIT_NOT_RUNNING,
                "disconnected",
                format!("lost the connection to the daemon: {other}"),
            ),
        }
    }
}

/// The socket to use: the flag/env value, or the default for this user.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    agenfleet_protocol::default_paths(root).1
}

/// A connected client (version-checked by `open`; by the caller after `open_pipelined`).
#[derive(Clone)]
pub struct Conn {
    pub client: FleetClient,
    pub timeout: Duration,
}

impl Conn {
    /// Connects and says hello.
    pub async fn open(socket: &Path, timeout: Duration) -> Result<(Conn, Hello), CliError> {
        let client = Self::connect(socket).await?;
        let hello = client
            .hello(transport::context_with_timeout(timeout), PROTOCOL_VERSION)
            .await??;
        Ok((Conn { client, timeout }, hello))
    }

    /// Connects and sends the hello without waiting for it: the caller sends its request
    /// at once and checks the returned handshake before using the answer.
    pub async fn open_pipelined(
        socket: &Path,
        timeout: Duration,
    ) -> Result<
        (
            Conn,
            impl std::future::Future<Output = Result<Hello, CliError>>,
        ),
        CliError,
    > {
        let client = Self::connect(socket).await?;
        let c = client.clone();
        let hello = async move {
            Ok(
                c.hello(transport::context_with_timeout(timeout), PROTOCOL_VERSION)
                    .await??,
            )
        };
        Ok((Conn { client, timeout }, hello))
    }

    async fn connect(socket: &Path) -> Result<FleetClient, CliError> {
        transport::connect(socket, DEFAULT_MAX_FRAME_BYTES)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => CliError::new(
                    EXIT_NOT_RUNNING,
                    "not_running",
                    format!(
                        "the daemon is not running (nothing listens on {}); start it with `agenfleetd`, or point --socket / AGENFLEET_SOCKET at it",
                        socket.display()
                    ),
                ),
                std::io::ErrorKind::PermissionDenied => CliError::new(
                    4,
                    "permission_denied",
                    format!(
                        "not permitted to open the daemon's socket {} (ask an admin to add you to its group)",
                        socket.display()
                    ),
                ),
                _ => CliError::new(
                    EXIT_NOT_RUNNING,
                    "not_running",
                    format!("cannot connect to the daemon at {}: {e}", socket.display()),
                ),
            })
    }

    /// A context with the default deadline.
    pub fn ctx(&self) -> tarpc::context::Context {
        transport::context_with_timeout(self.timeout)
    }

    /// A context whose deadline leaves room for a server-side wait of `wait`.
    pub fn ctx_wait(&self, wait: Duration) -> tarpc::context::Context {
        transport::context_with_timeout(self.timeout + wait)
    }
}

/// The token to act with: `--token-file`, else `AGENFLEET_TOKEN`, else none (your uid).
pub fn token_from(
    file: Option<&Path>,
) -> Result<Option<agenfleet_protocol::SecretValue>, CliError> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| CliError::new(6, "invalid_argument", format!("{}: {e}", p.display())))?,
        None => match std::env::var("AGENFLEET_TOKEN") {
            Ok(t) => t,
            Err(_) => return Ok(None),
        },
    };
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    Ok(Some(agenfleet_protocol::SecretValue::new(
        t.as_bytes().to_vec(),
    )))
}

impl Conn {
    /// Binds this connection to a personal access token.
    pub async fn authenticate(
        &self,
        token: agenfleet_protocol::SecretValue,
    ) -> Result<(), CliError> {
        self.client.authenticate(self.ctx(), token).await??;
        Ok(())
    }
}
