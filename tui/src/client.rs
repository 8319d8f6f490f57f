//! Connecting to the daemon: the socket path (flag, `AGENFLEET_SOCKET`, then the places a
//! daemon listens by default),
//! the protocol handshake, deadlines, and the errors a person or a script sees — each with
//! its documented exit code.

pub use crate::contexts::Endpoint;
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

/// Where the socket was found, for `agenfleet info` and for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketChoice {
    pub path: PathBuf,
    /// `--socket`, `AGENFLEET_SOCKET`, `$XDG_RUNTIME_DIR`, `this user's daemon`, or
    /// `the system daemon`.
    pub why: &'static str,
    /// Every place looked at, in order (one when the flag or the variable named it).
    pub tried: Vec<PathBuf>,
}

/// What was tried, for the "not running" error (set once per process by `socket_path`).
static TRIED: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// The socket to use, in this order: `--socket`; `AGENFLEET_SOCKET`;
/// `$XDG_RUNTIME_DIR/agenfleet/agenfleet.sock`; this user's daemon's default (when it is
/// another place); `/run/agenfleet/agenfleet.sock` (the system service's). The first of
/// the last three that is a socket wins; with none, the first is named.
pub fn choose_socket(flag: Option<&Path>) -> SocketChoice {
    if let Some(p) = flag {
        return SocketChoice {
            path: p.to_path_buf(),
            why: "--socket",
            tried: vec![p.to_path_buf()],
        };
    }
    if let Some(p) = std::env::var_os("AGENFLEET_SOCKET").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return SocketChoice {
            tried: vec![p.clone()],
            path: p,
            why: "AGENFLEET_SOCKET",
        };
    }
    let mut candidates: Vec<(PathBuf, &'static str)> = Vec::new();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        candidates.push((
            PathBuf::from(x).join("agenfleet").join("agenfleet.sock"),
            "$XDG_RUNTIME_DIR",
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let own = agenfleet_protocol::default_paths(root).1;
    let system = agenfleet_protocol::default_paths(true).1;
    if own != system && !candidates.iter().any(|(p, _)| *p == own) {
        candidates.push((own, "this user's daemon"));
    }
    if !candidates.iter().any(|(p, _)| *p == system) {
        candidates.push((system, "the system daemon"));
    }
    let tried: Vec<PathBuf> = candidates.iter().map(|(p, _)| p.clone()).collect();
    let is_socket = |p: &Path| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
    };
    let (path, why) = candidates
        .iter()
        .find(|(p, _)| is_socket(p))
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| {
            (
                PathBuf::from("/run/agenfleet/agenfleet.sock"),
                "the system daemon",
            )
        });
    SocketChoice { path, why, tried }
}

/// The socket to use (see `choose_socket`); remembers what was tried for the errors.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    let c = choose_socket(flag);
    let _ = TRIED.set(c.tried);
    c.path
}

/// ", tried A, B" when the socket was looked for in several places.
fn tried_note() -> String {
    match TRIED.get() {
        Some(t) if t.len() > 1 => format!(
            " (looked for a daemon at {})",
            t.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    }
}

/// The ssh process behind a connection: the last lines it wrote on stderr (its reason
/// when a connection fails, kept small) and whether it has exited.
#[derive(Clone)]
pub struct SshSide {
    said: std::sync::Arc<std::sync::Mutex<String>>,
    done: tokio::sync::watch::Receiver<bool>,
}

impl SshSide {
    fn push(said: &std::sync::Mutex<String>, line: &str) {
        let mut s = said.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() > 4096 {
            s.clear();
        }
        s.push_str(line.trim());
        s.push('\n');
    }

    /// What ssh said last, once it has exited (waiting a little for it to).
    pub async fn reason(&self) -> Option<String> {
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(Duration::from_secs(3), done.wait_for(|d| *d)).await;
        let s = self.said.lock().unwrap_or_else(|p| p.into_inner());
        s.lines().rfind(|l| !l.is_empty()).map(str::to_string)
    }
}

/// Runs the system `ssh` (the user's config, agent and known_hosts apply) with
/// `agenfleet dial-stdio` on the other side, and speaks the protocol over its stdin and
/// stdout. The child dies with the connection (its stdin closes; `kill_on_drop` too).
fn connect_ssh(ep: &Endpoint) -> Result<(FleetClient, SshSide), CliError> {
    let args = ep.ssh_args().unwrap_or_default();
    // `AGENFLEET_SSH_COMMAND` (like git's GIT_SSH_COMMAND): the ssh to run and its own
    // options, split on spaces, e.g. `ssh -F ~/.ssh/fleet.conf`.
    let custom = std::env::var("AGENFLEET_SSH_COMMAND").unwrap_or_default();
    let mut words = custom.split_whitespace();
    let program = words.next().unwrap_or("ssh").to_string();
    let mut child = tokio::process::Command::new(&program)
        .args(words)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            CliError::new(
                EXIT_NOT_RUNNING,
                "not_running",
                format!("cannot run {program} for {ep}: {e}"),
            )
        })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(CliError::new(
            EXIT_NOT_RUNNING,
            "not_running",
            format!("ssh for {ep} has no pipes"),
        ));
    };
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, done) = tokio::sync::watch::channel(false);
    let keep = said.clone();
    let ep_name = ep.to_string();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tracing::debug!(endpoint = %ep_name, "ssh: {l}");
            SshSide::push(&keep, &l);
        }
        // The pipe closed: ssh is gone; reap it.
        let _ = child.wait().await;
        let _ = tx.send(true);
    });
    let t = transport::transport(tokio::io::join(stdout, stdin), DEFAULT_MAX_FRAME_BYTES);
    let client = FleetClient::new(tarpc::client::Config::default(), t).spawn();
    Ok((client, SshSide { said, done }))
}

/// A failure to reach a daemon through ssh, with ssh's own reason when it gave one.
async fn through_ssh(e: CliError, ep: &Endpoint, ssh: &Option<SshSide>) -> CliError {
    let Some(side) = ssh else { return e };
    if e.code != "disconnected" && e.code != "timeout" {
        return e;
    }
    match side.reason().await {
        Some(why) => CliError::new(
            EXIT_NOT_RUNNING,
            "not_running",
            format!("cannot reach the daemon at {ep}: ssh says: {why}"),
        ),
        None => e,
    }
}

/// The protocol handshake; a failure through ssh says what ssh said.
async fn hello(
    client: FleetClient,
    timeout: Duration,
    ep: Endpoint,
    ssh: Option<SshSide>,
) -> Result<Hello, CliError> {
    let h = async {
        Ok::<_, CliError>(
            client
                .hello(transport::context_with_timeout(timeout), PROTOCOL_VERSION)
                .await??,
        )
    };
    match h.await {
        Ok(h) => Ok(h),
        Err(e) => Err(through_ssh(e, &ep, &ssh).await),
    }
}

/// A connected client (version-checked by `open`; by the caller after `open_pipelined`).
#[derive(Clone)]
pub struct Conn {
    pub client: FleetClient,
    pub timeout: Duration,
    /// The ssh process carrying it (ssh contexts).
    pub ssh: Option<SshSide>,
}

impl Conn {
    /// Connects and says hello.
    pub async fn open(ep: &Endpoint, timeout: Duration) -> Result<(Conn, Hello), CliError> {
        let (client, ssh) = Self::connect_to(ep).await?;
        let hello = hello(client.clone(), timeout, ep.clone(), ssh.clone()).await?;
        Ok((
            Conn {
                client,
                timeout,
                ssh,
            },
            hello,
        ))
    }

    /// Connects and sends the hello without waiting for it: the caller sends its request
    /// at once and checks the returned handshake before using the answer.
    pub async fn open_pipelined(
        ep: &Endpoint,
        timeout: Duration,
    ) -> Result<
        (
            Conn,
            impl std::future::Future<Output = Result<Hello, CliError>>,
        ),
        CliError,
    > {
        let (client, ssh) = Self::connect_to(ep).await?;
        let hello = hello(client.clone(), timeout, ep.clone(), ssh.clone());
        Ok((
            Conn {
                client,
                timeout,
                ssh,
            },
            hello,
        ))
    }

    async fn connect_to(ep: &Endpoint) -> Result<(FleetClient, Option<SshSide>), CliError> {
        match ep {
            Endpoint::Unix(p) => Ok((Self::connect(p).await?, None)),
            Endpoint::Ssh { .. } => connect_ssh(ep).map(|(c, s)| (c, Some(s))),
        }
    }

    async fn connect(socket: &Path) -> Result<FleetClient, CliError> {
        transport::connect(socket, DEFAULT_MAX_FRAME_BYTES)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => CliError::new(
                    EXIT_NOT_RUNNING,
                    "not_running",
                    format!(
                        "the daemon is not running (nothing listens on {}){}; start it with `agenfleetd` (or `systemctl start agenfleetd`), or point --socket / AGENFLEET_SOCKET at it",
                        socket.display(),
                        tried_note()
                    ),
                ),
                std::io::ErrorKind::PermissionDenied => CliError::new(
                    4,
                    "permission_denied",
                    format!(
                        "not permitted to open the daemon's socket {} (ask an admin to add you to its group, `socket_group` in the daemon's config)",
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
