//! Backups on the wire: what `backup_create` answers (the archive's size and the audit
//! checkpoint it is consistent with), the chunks `backup_read` streams, and the manifest
//! the archive carries (also read by `agenfleetd restore`).

use crate::audit::Checkpoint;
use serde::{Deserialize, Serialize};

/// The manifest's format tag; a restore refuses any other.
pub const BACKUP_FORMAT: &str = "agenfleet-backup/1";
/// The archive's manifest entry, and the entry holding that manifest's SHA-256.
pub const MANIFEST_NAME: &str = "manifest.json";
pub const MANIFEST_DIGEST_NAME: &str = "manifest.sha256";
/// Most bytes one `backup_read` answers (well under a frame).
pub const MAX_BACKUP_CHUNK: u32 = 2 * 1024 * 1024;

/// A backup the daemon has prepared and streams to its caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub id: String,
    /// The archive's exact size in bytes.
    pub bytes: u64,
    /// Files in it, the manifest included.
    pub files: u32,
    /// The audit log is in it up to this checkpoint (signed for this backup).
    pub checkpoint: Checkpoint,
    pub instance_id: String,
    pub created_ms: u64,
    /// Time taken to fix the snapshot (the database copy and the audit cut).
    pub prepare_ms: u64,
    /// A dedicated tenant's archive: the recovery key of the vault made for it (shown
    /// once, kept nowhere; `agenfleet vault unseal` with it on the restored daemon).
    #[serde(default)]
    pub recovery_key: Option<crate::secret::SecretValue>,
}

/// Bytes of an archive from `offset`; `sha256` comes with the last: the manifest's, which
/// pins every file's (the caller hashes the whole archive on its side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupChunk {
    pub offset: u64,
    /// As bytes on the wire (one copy), not as a sequence of numbers.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub done: bool,
    pub sha256: Option<String>,
}

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// Path inside the archive (and inside the restored state dir).
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What an archive holds and how to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: String,
    pub software_version: String,
    pub instance_id: String,
    pub created_ms: u64,
    /// The audit log in the archive ends exactly at this checkpoint.
    pub checkpoint: Checkpoint,
    /// The config file in force when it was made (None: built-in defaults), and where
    /// it was.
    pub config_source: Option<String>,
    pub files: Vec<BackupFile>,
    /// A dedicated tenant's archive (that tenant alone): no audit log in it (the
    /// checkpoint says where the source's log stood), and `agenfleet.db` holds only the
    /// platform rows a fresh daemon needs to open the tenant's secrets.
    #[serde(default)]
    pub tenant: Option<String>,
}
