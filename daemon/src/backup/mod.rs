//! Backups of a running daemon and their restore. `Backups::create` fixes a consistent
//! snapshot — the database copied with `VACUUM INTO` (a read transaction: writers go on),
//! then the audit log cut at a checkpoint signed for the backup (every change is recorded
//! before it is made, so the log covers all the copy holds) — and the archive is then
//! streamed to the caller by `read` straight from those files (see `archive`). Secrets
//! stay sealed in the database copy; the master key is never in it (the recovery key
//! opens a restored vault). `restore` rebuilds a state dir from an archive, offline.

pub mod archive;
pub mod restore;

use crate::audit::{checkpoint, format, AuditLog};
use crate::store::tiers::TENANTS_DIR;
use agenfleet_protocol::backup::{BackupChunk, BackupInfo, BackupManifest, BACKUP_FORMAT};
use archive::{Item, Source, Stream};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backup nobody has read from for this long is dropped (its caller went away).
const IDLE: Duration = Duration::from_secs(600);
/// Backups streamed at once.
const MAX_OPEN: usize = 2;
/// The database file in a state dir and in an archive.
pub const DB_NAME: &str = "agenfleet.db";
/// Agents' memory stores, in a state dir and in an archive (`memory/<tenant>/<agent>.db`).
pub const MEMORY_DIR: &str = "memory";
/// The config in force at backup time, in an archive and in a restored state dir.
pub const CONFIG_NAME: &str = "agenfleetd.toml.at-backup";

/// Whether an archive may put a file of this name into a state dir: only what a backup
/// writes (a restore must never plant, say, the agents' init binary or a workspace).
pub fn allowed_name(name: &str) -> bool {
    match name.split_once('/') {
        None => name == DB_NAME || name == CONFIG_NAME,
        Some((TENANTS_DIR, f)) => f
            .strip_suffix(".db")
            .is_some_and(|t| agenfleet_protocol::spec::check_name("tenant", t).is_ok()),
        Some((MEMORY_DIR, f)) => f.split_once('/').is_some_and(|(t, a)| {
            agenfleet_protocol::spec::check_name("tenant", t).is_ok()
                && a.strip_suffix(".db")
                    .is_some_and(|a| agenfleet_protocol::spec::check_name("agent", a).is_ok())
        }),
        Some(("audit", f)) => {
            f == checkpoint::CHECKPOINTS_FILE
                || f == checkpoint::PUBLIC_KEY_FILE
                || f == checkpoint::ANCHOR_FILE
                || f.strip_prefix("audit-")
                    .and_then(|s| s.strip_suffix(".seg"))
                    .is_some_and(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        }
        Some(_) => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Busy(String),
    #[error("no backup `{0}` is being streamed (finished, expired after 10 idle minutes, or never made)")]
    NotFound(String),
    #[error("backup {id}: the next byte is at offset {want}, not {got}")]
    Offset { id: String, want: u64, got: u64 },
    #[error("the audit log cannot be cut for a backup: {0}")]
    Audit(String),
    #[error("backup: {0}")]
    Io(String),
    #[error("{0}")]
    Refused(String),
}

struct Prepared {
    stream: Stream,
    files: u32,
    checkpoint: agenfleet_protocol::Checkpoint,
    created_ms: u64,
    /// The installation the archive restores as (a tenant's archive: a new one).
    instance_id: String,
    /// A tenant's archive: the recovery key of the vault made for it.
    recovery_key: Option<agenfleet_protocol::SecretValue>,
}

/// A chunk the producer made, or why it stopped.
type Made = Result<BackupChunk, String>;

struct Session {
    /// Chunks made ahead by the session's producer thread (two at most wait here), so
    /// the daemon reads and hashes the next while the caller writes the last.
    chunks: std::sync::mpsc::Receiver<Made>,
    /// What a smaller read left of the last chunk.
    pending: Option<BackupChunk>,
    /// The next byte the caller reads.
    pos: u64,
    staging: PathBuf,
    touched: Instant,
}

/// Runs `stream` to its end on a thread of its own, chunk by chunk into `tx`; stops when
/// the session is dropped (the receiver goes).
fn produce(mut stream: Stream, tx: std::sync::mpsc::SyncSender<Made>) {
    let max = agenfleet_protocol::backup::MAX_BACKUP_CHUNK as usize;
    loop {
        let offset = stream.pos();
        let mut data = Vec::with_capacity(max);
        let made = stream.fill(&mut data, max).map(|done| BackupChunk {
            offset,
            data,
            done,
            sha256: done.then(|| stream.digest().unwrap_or_default().to_string()),
        });
        let last = !matches!(&made, Ok(c) if !c.done);
        if tx.send(made.map_err(|e| e.to_string())).is_err() || last {
            return;
        }
    }
}

/// The backups being streamed, with their staging dirs under `<state_dir>/backups`.
pub struct Backups {
    dir: PathBuf,
    sessions: Mutex<HashMap<String, Arc<Mutex<Session>>>>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(format!("{what}: {e}"))
}

impl Backups {
    /// Removes the staging dirs a previous run left behind.
    pub fn new(state_dir: &Path) -> Backups {
        let dir = state_dir.join("backups");
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot remove old backup staging");
            }
        }
        Backups {
            dir,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<Session>>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drop_session(&self, id: &str) {
        if let Some(s) = self.sessions().remove(id) {
            let staging = s.lock().unwrap_or_else(|p| p.into_inner()).staging.clone();
            let _ = std::fs::remove_dir_all(staging);
        }
    }

    fn expire(&self) {
        let idle: Vec<String> = self
            .sessions()
            .iter()
            .filter(|(_, s)| {
                s.try_lock()
                    .map(|s| s.touched.elapsed() > IDLE)
                    .unwrap_or(false)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            tracing::info!(backup = %id, "a backup nobody read for 10 minutes was dropped");
            self.drop_session(&id);
        }
    }

    /// Fixes a snapshot: the database copied, then the audit log cut at a checkpoint
    /// signed for this backup. `config` is the config file in force (if any).
    /// A backup of the whole host, or (`tenant`) of one dedicated tenant alone.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        store: &crate::store::Store,
        vault: &Arc<crate::vault::Vault>,
        db: &Path,
        audit: &AuditLog,
        config: Option<&Path>,
        instance_id: &str,
        tenant: Option<&str>,
    ) -> Result<BackupInfo, BackupError> {
        self.expire();
        if self.sessions().len() >= MAX_OPEN {
            return Err(BackupError::Busy(format!(
                "{MAX_OPEN} backups are being streamed already; finish or abandon one (abandoned ones go after 10 idle minutes)"
            )));
        }
        let started = Instant::now();
        let id = hex::encode(rand::random::<[u8; 8]>());
        let staging = self.dir.join(&id);
        std::fs::create_dir_all(&staging).map_err(io("cannot create the staging dir"))?;
        let made = match tenant {
            None => {
                self.prepare(store, db, audit, config, instance_id, &id, &staging)
                    .await
            }
            Some(t) => {
                let state = db.parent().unwrap_or(Path::new("."));
                prepare_tenant(state, store, vault, audit, t, &id, &staging).await
            }
        };
        let p = match made {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let info = BackupInfo {
            id: id.clone(),
            bytes: p.stream.total(),
            files: p.files,
            checkpoint: p.checkpoint,
            instance_id: p.instance_id,
            recovery_key: p.recovery_key,
            created_ms: p.created_ms,
            prepare_ms: started.elapsed().as_millis() as u64,
        };
        let (tx, chunks) = std::sync::mpsc::sync_channel(2);
        let stream = p.stream;
        std::thread::Builder::new()
            .name("backup-stream".into())
            .spawn(move || produce(stream, tx))
            .map_err(io("cannot start the backup's reader"))?;
        self.sessions().insert(
            id,
            Arc::new(Mutex::new(Session {
                chunks,
                pending: None,
                pos: 0,
                staging,
                touched: Instant::now(),
            })),
        );
        Ok(info)
    }

    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &self,
        store: &crate::store::Store,
        db: &Path,
        audit: &AuditLog,
        config: Option<&Path>,
        instance_id: &str,
        id: &str,
        staging: &Path,
    ) -> Result<Prepared, BackupError> {
        let copy = staging.join(DB_NAME);
        // The shared file and every dedicated tenant's, in one state of the tiers (no
        // tenant moves between two of the copies), and the agents' memory stores.
        let tenant_copies: Vec<(String, PathBuf)> = {
            let (db, copy, store, staging) = (
                db.to_path_buf(),
                copy.clone(),
                store.clone(),
                staging.to_path_buf(),
            );
            tokio::task::spawn_blocking(move || {
                store
                    .holding_tiers(|| {
                        crate::store::snapshot_file(&db, &copy)?;
                        let files = store.dedicated_files().map_err(|e| e.to_string())?;
                        std::fs::create_dir_all(staging.join(TENANTS_DIR))
                            .map_err(|e| e.to_string())?;
                        let mut out = Vec::new();
                        for (tenant, path) in files {
                            let name = format!("{TENANTS_DIR}/{tenant}.db");
                            let to = staging.join(&name);
                            crate::store::snapshot_file(&path, &to)?;
                            out.push((name, to));
                        }
                        let state = db.parent().unwrap_or(Path::new("."));
                        for (name, to, _) in snapshot_memory(state, None, &staging)? {
                            out.push((name, to));
                        }
                        Ok(out)
                    })
                    .map_err(|e| e.to_string())?
            })
            .await
            .map_err(|e| BackupError::Io(e.to_string()))?
            .map_err(BackupError::Io)?
        };
        let cut = audit
            .cut()
            .await
            .map_err(|e| BackupError::Audit(e.to_string()))?;
        let dir = audit.dir().to_path_buf();
        let db_len = std::fs::metadata(&copy)
            .map_err(io("the database copy"))?
            .len();
        let mut items = vec![Item::file(DB_NAME.into(), &copy, db_len).map_err(io(DB_NAME))?];
        for (name, path) in &tenant_copies {
            let len = std::fs::metadata(path).map_err(io(name))?.len();
            items.push(Item::file(name.clone(), path, len).map_err(io(name))?);
        }
        let anchor = checkpoint::load_anchor(&dir).map_err(BackupError::Io)?;
        // Whole segments before the one being written, and that one up to the cut.
        if let Some((current, cut_len)) = &cut.segment {
            let segments =
                format::list_segments(&dir).map_err(io("cannot list the audit segments"))?;
            // Segments before a retention anchor are the rest of a removal cut short.
            let after = anchor.as_ref().map(|a| a.seq).unwrap_or(0);
            for (_, path) in segments.into_iter().filter(|(first, _)| *first > after) {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let len = if path == *current {
                    *cut_len
                } else {
                    std::fs::metadata(&path).map_err(io(&name))?.len()
                };
                items.push(Item::file(format!("audit/{name}"), &path, len).map_err(io(&name))?);
                if path == *current {
                    break;
                }
            }
        }
        // The checkpoints up to the one signed for this backup.
        let cps = checkpoint::load_all(&dir).map_err(BackupError::Io)?;
        let mut lines = Vec::new();
        for c in cps.iter().filter(|c| c.seq <= cut.checkpoint.seq) {
            lines.extend(serde_json::to_vec(c).map_err(|e| BackupError::Io(e.to_string()))?);
            lines.push(b'\n');
        }
        items.push(Item {
            name: format!("audit/{}", checkpoint::CHECKPOINTS_FILE),
            source: Source::Bytes(lines),
        });
        // Where retention made the log start (its chain is checked from there).
        if let Some(anchor) = &anchor {
            items.push(Item {
                name: format!("audit/{}", checkpoint::ANCHOR_FILE),
                source: Source::Bytes(
                    serde_json::to_vec(anchor).map_err(|e| BackupError::Io(e.to_string()))?,
                ),
            });
        }
        items.push(Item {
            name: format!("audit/{}", checkpoint::PUBLIC_KEY_FILE),
            source: Source::Bytes(format!("{}\n", cut.checkpoint.public_key).into_bytes()),
        });
        if let Some(cfg) = config {
            let text = std::fs::read(cfg).map_err(io("cannot read the config file"))?;
            items.push(Item {
                name: CONFIG_NAME.into(),
                source: Source::Bytes(text),
            });
        }
        tracing::info!(backup = %id, files = items.len(), audit_seq = cut.checkpoint.seq, "backup prepared");
        let manifest = BackupManifest {
            format: BACKUP_FORMAT.into(),
            software_version: agenfleet_protocol::SOFTWARE_VERSION.into(),
            instance_id: instance_id.to_string(),
            created_ms: agenfleet_protocol::now_ms(),
            checkpoint: cut.checkpoint,
            config_source: config.map(|c| c.display().to_string()),
            files: vec![],
            tenant: None,
        };
        let files = items.len() as u32 + 2;
        let (checkpoint, created_ms) = (manifest.checkpoint.clone(), manifest.created_ms);
        let stream = Stream::new(items, manifest);
        Ok(Prepared {
            stream,
            files,
            checkpoint,
            created_ms,
            instance_id: instance_id.to_string(),
            recovery_key: None,
        })
    }

    /// The archive's next bytes from `offset` (which must be the next unread one), at
    /// most `max`. The last chunk carries the archive's SHA-256 and ends the backup.
    pub fn read(&self, id: &str, offset: u64, max: u32) -> Result<BackupChunk, BackupError> {
        let session = self
            .sessions()
            .get(id)
            .cloned()
            .ok_or_else(|| BackupError::NotFound(id.to_string()))?;
        let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
        if offset != s.pos {
            return Err(BackupError::Offset {
                id: id.to_string(),
                want: s.pos,
                got: offset,
            });
        }
        let next = match s.pending.take() {
            Some(c) => Ok(c),
            None => s
                .chunks
                .recv()
                .unwrap_or_else(|_| Err("the backup's reader stopped".into())),
        };
        let mut chunk = match next {
            Ok(c) => c,
            Err(e) => {
                drop(s);
                self.drop_session(id);
                return Err(BackupError::Io(e));
            }
        };
        let max = max.clamp(1, agenfleet_protocol::backup::MAX_BACKUP_CHUNK) as usize;
        if chunk.data.len() > max {
            // A smaller read: the rest waits for the next.
            let rest = chunk.data.split_off(max);
            s.pending = Some(BackupChunk {
                offset: offset + max as u64,
                data: rest,
                done: chunk.done,
                sha256: chunk.sha256.take(),
            });
            chunk.done = false;
        }
        s.pos += chunk.data.len() as u64;
        s.touched = Instant::now();
        drop(s);
        if chunk.done {
            self.drop_session(id);
        }
        Ok(chunk)
    }
}

/// Copies the agents' memory stores (of `tenant`, or every one) under `state_dir` into
/// `staging`, each as one snapshot: (archive name, copy, the data key its memory key is
/// wrapped with).
fn snapshot_memory(
    state_dir: &Path,
    tenant: Option<&str>,
    staging: &Path,
) -> Result<Vec<(String, PathBuf, u64)>, String> {
    let root = state_dir.join(MEMORY_DIR);
    let mut out = Vec::new();
    let tenants: Vec<String> = match tenant {
        Some(t) => vec![t.to_string()],
        None => match std::fs::read_dir(&root) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(format!("cannot list {}: {e}", root.display())),
        },
    };
    for t in tenants {
        let entries = match std::fs::read_dir(root.join(&t)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot list the memory of {t}: {e}")),
        };
        let mut files: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        files.sort();
        for f in files {
            let name = format!("{MEMORY_DIR}/{t}/{f}");
            if !allowed_name(&name) {
                continue; // a WAL or shared-memory file beside a store
            }
            let to = staging.join(&name);
            std::fs::create_dir_all(staging.join(MEMORY_DIR).join(&t))
                .map_err(|e| format!("cannot make {}: {e}", to.display()))?;
            crate::store::snapshot_file(&root.join(&t).join(&f), &to)?;
            let key: i64 = rusqlite::Connection::open(&to)
                .and_then(|c| c.query_row("SELECT key_id FROM meta WHERE id = 1", [], |r| r.get(0)))
                .map_err(|e| format!("{name}: no memory key: {e}"))?;
            out.push((name, to, key as u64));
        }
    }
    Ok(out)
}

/// A dedicated tenant alone: its file (copied as one snapshot), and a new platform
/// database holding only what a fresh daemon needs to open the tenant's secrets — the
/// vault's check, recovery-wrapped master key and HMAC key, the wrapped data keys the
/// tenant's rows name, and the tier registry's row — under a new installation id (the
/// fresh daemon never takes the source's containers for its own). No audit log: the
/// checkpoint, signed for this backup, says where the source's log stood.
async fn prepare_tenant(
    state_dir: &Path,
    store: &crate::store::Store,
    vault: &Arc<crate::vault::Vault>,
    audit: &AuditLog,
    tenant: &str,
    id: &str,
    staging: &Path,
) -> Result<Prepared, BackupError> {
    let (made, recovery, memory) = {
        let (store, tenant, staging) = (store.clone(), tenant.to_string(), staging.to_path_buf());
        let vault = vault.clone();
        let state = state_dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut recovery = None;
            let mut memory = Vec::new();
            let wrap = |instance: &str, ids: &[u64]| {
                // The tenant's agents' memory stores, and the data keys their keys need.
                memory = snapshot_memory(&state, Some(&tenant), &staging)?;
                let mut ids = ids.to_vec();
                ids.extend(memory.iter().map(|m| m.2));
                ids.sort();
                ids.dedup();
                let v = vault
                    .export_for(instance, &ids)
                    .map_err(|e| e.to_string())?;
                recovery = Some(v.recovery);
                Ok((v.meta, v.keys))
            };
            crate::store::tiers::export_tenant(&store, &tenant, &staging, wrap)
                .map(|made| (made, recovery, memory))
                .map_err(|e| match e {
                    crate::store::StoreError::Invalid(m)
                    | crate::store::StoreError::NotFound(m) => BackupError::Refused(m),
                    e => BackupError::Io(e.to_string()),
                })
        })
        .await
        .map_err(|e| BackupError::Io(e.to_string()))??
    };
    let cut = audit
        .cut()
        .await
        .map_err(|e| BackupError::Audit(e.to_string()))?;
    let mut items = Vec::new();
    let names = [DB_NAME.to_string(), format!("{TENANTS_DIR}/{tenant}.db")];
    for name in names.into_iter().chain(memory.into_iter().map(|m| m.0)) {
        let path = staging.join(&name);
        let len = std::fs::metadata(&path).map_err(io(&name))?.len();
        items.push(Item::file(name.clone(), &path, len).map_err(io(&name))?);
    }
    tracing::info!(backup = %id, tenant, audit_seq = cut.checkpoint.seq, "tenant backup prepared");
    let manifest = BackupManifest {
        format: BACKUP_FORMAT.into(),
        software_version: agenfleet_protocol::SOFTWARE_VERSION.into(),
        instance_id: made.clone(),
        created_ms: agenfleet_protocol::now_ms(),
        checkpoint: cut.checkpoint,
        config_source: None,
        files: vec![],
        tenant: Some(tenant.to_string()),
    };
    let files = items.len() as u32 + 2;
    let (checkpoint, created_ms) = (manifest.checkpoint.clone(), manifest.created_ms);
    Ok(Prepared {
        stream: Stream::new(items, manifest),
        files,
        checkpoint,
        created_ms,
        instance_id: made,
        recovery_key: recovery,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restore_writes_only_what_a_backup_holds() {
        for ok in [
            "agenfleet.db",
            "agenfleetd.toml.at-backup",
            "audit/audit-00000000000000000001.seg",
            "audit/checkpoints.jsonl",
            "audit/audit-signing.pub",
            "audit/anchor.json",
            "tenants/acme.db",
            "memory/acme/a1.db",
        ] {
            assert!(super::allowed_name(ok), "{ok}");
        }
        for bad in [
            "bin/agenfleet-agent-0123456789ab",
            "workspaces/t.a.img",
            "restored-from.json",
            "agenfleetd.lock",
            "audit/audit-1.seg",
            "audit/other",
            "gateways/t.a/gateway.sock",
            "tenants/Acme.db",
            "tenants/acme.db-wal",
            "memory/acme/a1.db-wal",
            "memory/acme/../a1.db",
            "memory/acme.db",
        ] {
            assert!(!super::allowed_name(bad), "{bad}");
        }
    }
}
