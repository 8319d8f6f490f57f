//! `agenfleetd restore FILE --state-dir DIR`, offline: unpacks an archive next to DIR,
//! checks every file against the manifest, the audit log's chain up to the checkpoint the
//! backup signed, and the database's integrity, and only then moves the result into
//! place. DIR must be new or empty; a damaged archive changes nothing and is named.

use super::{archive, CONFIG_NAME, DB_NAME, MEMORY_DIR};
use agenfleet_protocol::backup::BackupManifest;
use std::path::{Path, PathBuf};

/// Left in a restored state dir for the daemon's first start (see `take_marker`).
pub const RESTORED_MARKER: &str = "restored-from.json";

/// At the daemon's start: if the state dir was just restored, what the restore wrote, as
/// one line for the audit trail (`clear_marker` once the trail holds it).
pub fn restored_marker(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(RESTORED_MARKER)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(format!(
        "state restored from {} (a backup made at {} ms by agenfleetd {}, its audit log up to record {} hash {}) at {} ms",
        v["archive"].as_str().unwrap_or("?"),
        v["created_ms"],
        v["software_version"].as_str().unwrap_or("?"),
        v["checkpoint_seq"],
        v["checkpoint_hash"].as_str().unwrap_or("?"),
        v["restored_ms"],
    ))
}

/// Removes the marker once the restore is in the trail.
pub fn clear_marker(state_dir: &Path) {
    let p = state_dir.join(RESTORED_MARKER);
    if let Err(e) = std::fs::remove_file(&p) {
        tracing::warn!(error = %e, file = %p.display(), "cannot remove the restore marker");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target cannot take the restore (exit 73).
    #[error("{0}")]
    Target(String),
    /// The archive is damaged or not a backup (exit 65).
    #[error("{0}")]
    Damaged(String),
    /// Reading or writing failed (exit 74).
    #[error("{0}")]
    Io(String),
}

impl RestoreError {
    /// The process exit code (sysexits: DATAERR, CANTCREAT, IOERR).
    pub fn exit_code(&self) -> u8 {
        match self {
            RestoreError::Damaged(_) => 65,
            RestoreError::Target(_) => 73,
            RestoreError::Io(_) => 74,
        }
    }
}

/// What a restore put in place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub state_dir: PathBuf,
    pub manifest: BackupManifest,
    pub audit_records: u64,
    /// The config in force at backup time, restored beside the state.
    pub config: Option<PathBuf>,
    pub bytes: u64,
    pub seconds: f64,
}

fn io(what: impl std::fmt::Display) -> impl Fn(std::io::Error) -> RestoreError {
    move |e| RestoreError::Io(format!("{what}: {e}"))
}

/// Restores `archive` into `state_dir` (which must not exist or be empty).
pub fn restore(archive_path: &Path, state_dir: &Path) -> Result<Restored, RestoreError> {
    let started = std::time::Instant::now();
    if state_dir.exists() {
        let mut entries = std::fs::read_dir(state_dir).map_err(|e| {
            RestoreError::Target(format!("{} cannot be read: {e}", state_dir.display()))
        })?;
        if entries.next().is_some() {
            return Err(RestoreError::Target(format!(
                "{} is not empty: a restore goes only into a new or empty directory (nothing was changed)",
                state_dir.display()
            )));
        }
    }
    let name = state_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| {
            RestoreError::Target(format!("{} names no directory", state_dir.display()))
        })?;
    let parent = match state_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|e| RestoreError::Target(format!("cannot create {}: {e}", parent.display())))?;
    let file = std::fs::File::open(archive_path).map_err(io(archive_path.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    // Unpacked beside the target (same filesystem), moved into place only when good.
    let staging = parent.join(format!(".{name}.restore-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(staging.display()))?;
    }
    std::fs::create_dir(&staging)
        .map_err(|e| RestoreError::Target(format!("cannot create {}: {e}", staging.display())))?;
    let checked = unpack_and_check(file, &staging);
    let (manifest, audit_records) = match checked {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // The first start records the restore (the log cannot be written offline: its key is
    // the daemon's) and knows not to take the backup's cut for a crash.
    let marker = serde_json::json!({
        "archive": archive_path.display().to_string(),
        "restored_ms": agenfleet_protocol::now_ms(),
        "created_ms": manifest.created_ms,
        "checkpoint_seq": manifest.checkpoint.seq,
        "checkpoint_hash": manifest.checkpoint.hash,
        "software_version": manifest.software_version,
    });
    if let Err(e) = std::fs::write(staging.join(RESTORED_MARKER), marker.to_string()) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(RestoreError::Io(format!(
            "cannot write {RESTORED_MARKER}: {e}"
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    let moved = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
        .and_then(|_| {
            if state_dir.exists() {
                std::fs::remove_dir(state_dir)?;
            }
            std::fs::rename(&staging, state_dir)
        })
        .and_then(|_| std::fs::File::open(&parent)?.sync_all());
    if let Err(e) = moved {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(RestoreError::Target(format!(
            "cannot move the restored state into {}: {e}",
            state_dir.display()
        )));
    }
    let config = state_dir.join(CONFIG_NAME);
    Ok(Restored {
        state_dir: state_dir.to_path_buf(),
        manifest,
        audit_records,
        config: config.exists().then_some(config),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn unpack_and_check(
    file: std::fs::File,
    staging: &Path,
) -> Result<(BackupManifest, u64), RestoreError> {
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let manifest = archive::read(reader, staging).map_err(|e| match e {
        archive::ArchiveError::Damaged(_) => RestoreError::Damaged(e.to_string()),
        archive::ArchiveError::Io(_) => RestoreError::Io(e.to_string()),
    })?;
    if let Some(f) = manifest
        .files
        .iter()
        .find(|f| !super::allowed_name(&f.name))
    {
        return Err(RestoreError::Damaged(format!(
            "the archive holds {}, which is not a file a backup makes (nothing restored)",
            f.name
        )));
    }
    // The audit log: an unbroken chain that ends exactly at the backup's checkpoint, whose
    // signature holds.
    let cp = &manifest.checkpoint;
    crate::audit::checkpoint::verify_signature(cp, None).map_err(|e| {
        RestoreError::Damaged(format!(
            "the backup's audit checkpoint does not verify: {e}"
        ))
    })?;
    // A dedicated tenant's archive holds no audit log (its checkpoint says where the
    // source's stood): exactly the platform database and the tenant's file.
    if let Some(t) = &manifest.tenant {
        let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
        let want = format!("tenants/{t}.db");
        let memory = format!("{MEMORY_DIR}/{t}/");
        let foreign = names
            .iter()
            .find(|n| **n != DB_NAME && **n != want && !n.starts_with(&memory));
        if let Some(n) = foreign.or([DB_NAME, want.as_str()].iter().find(|w| !names.contains(w))) {
            return Err(RestoreError::Damaged(format!(
                "tenant {t}'s archive must hold {DB_NAME}, {want} and its agents' memory alone: {n} (nothing restored)"
            )));
        }
        check_databases(&manifest, staging)?;
        sync_tree(staging).map_err(io("cannot sync the restored files"))?;
        return Ok((manifest, 0));
    }
    let report = crate::audit::verify_dir(&staging.join("audit"), Some(cp));
    if !report.valid {
        return Err(RestoreError::Damaged(format!(
            "the audit log in the archive does not verify: {}",
            report.first_bad.unwrap_or_default()
        )));
    }
    if report.head_seq != cp.seq {
        return Err(RestoreError::Damaged(format!(
            "the audit log in the archive ends at record {}, not at the backup's checkpoint {}",
            report.head_seq, cp.seq
        )));
    }
    check_databases(&manifest, staging)?;
    sync_tree(staging).map_err(io("cannot sync the restored files"))?;
    Ok((manifest, report.head_seq))
}

/// The databases: SQLite's own check of each, the installation the platform one belongs
/// to, and each tenant file is the file of the tenant it is named after.
fn check_databases(manifest: &BackupManifest, staging: &Path) -> Result<(), RestoreError> {
    let db = staging.join(DB_NAME);
    let instance = crate::store::check_file(&db)
        .map_err(|e| RestoreError::Damaged(format!("{DB_NAME} {e}")))?;
    if instance != manifest.instance_id {
        return Err(RestoreError::Damaged(format!(
            "{DB_NAME} belongs to instance {instance}, the manifest to {}",
            manifest.instance_id
        )));
    }
    // Dedicated tenants' files: the same check, and each is the file of the tenant it is
    // named after.
    for f in manifest
        .files
        .iter()
        .filter(|f| f.name.starts_with("tenants/"))
    {
        let tenant = crate::store::check_tenant_file(&staging.join(&f.name))
            .map_err(|e| RestoreError::Damaged(format!("{} {e}", f.name)))?;
        if f.name != format!("tenants/{tenant}.db") {
            return Err(RestoreError::Damaged(format!(
                "{} holds tenant {tenant}'s rows",
                f.name
            )));
        }
    }
    // Agents' memory stores: SQLite's check.
    for f in manifest
        .files
        .iter()
        .filter(|f| f.name.starts_with(MEMORY_DIR))
    {
        crate::store::check_integrity(&staging.join(&f.name))
            .map_err(|e| RestoreError::Damaged(format!("{} {e}", f.name)))?;
    }
    Ok(())
}

/// Syncs every file under `dir`, then the directories themselves.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}
