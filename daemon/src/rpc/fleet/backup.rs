//! Backups over the operator socket: `backup_create` (platform admins — the archive holds
//! every tenant's sealed secrets and trail: vault.admin on the platform) fixes a snapshot
//! and is recorded before it is made; `backup_read` streams it to that same caller, and
//! its end (size and SHA-256) is recorded too.

use super::FleetService;
use crate::authz::{Permission, Scope};
use crate::backup::BackupError;
use agenfleet_protocol::{ApiError, BackupChunk, BackupInfo};

fn backup_err(e: BackupError) -> ApiError {
    match e {
        BackupError::Busy(m) => ApiError::unavailable(m),
        BackupError::NotFound(_) => ApiError::not_found(e.to_string()),
        BackupError::Offset { .. } => ApiError::invalid(e.to_string()),
        BackupError::Audit(_) => ApiError::precondition(e.to_string()),
        BackupError::Io(_) => ApiError::internal(e.to_string()),
        BackupError::Refused(m) => ApiError::precondition(m),
    }
}

impl FleetService {
    pub(super) async fn do_backup_create(
        &self,
        tenant: Option<String>,
    ) -> Result<BackupInfo, ApiError> {
        self.check(Permission::VaultAdmin, Scope::Platform, "backup_create")
            .await?;
        let rt = self.rt.clone();
        let config = rt.cfg.source.is_file().then(|| rt.cfg.source.clone());
        let db = rt.cfg.state_dir.join(crate::backup::DB_NAME);
        if let Some(t) = &tenant {
            agenfleet_protocol::spec::check_name("tenant", t).map_err(ApiError::invalid)?;
        }
        let detail = match &tenant {
            None => "database snapshot and the audit log up to a checkpoint signed for it".into(),
            Some(t) => format!(
                "dedicated tenant {t} alone: its database and the wrapped keys its secrets need"
            ),
        };
        let info = self
            .audited("backup.create", None, detail, async move {
                rt.backups
                    .create(
                        &rt.store,
                        &rt.vault,
                        &db,
                        &rt.audit,
                        config.as_deref(),
                        &rt.instance,
                        tenant.as_deref(),
                    )
                    .await
                    .map_err(backup_err)
            })
            .await?;
        tracing::info!(backup = %info.id, bytes = info.bytes, seq = info.checkpoint.seq, "backup ready to stream");
        Ok(info)
    }

    pub(super) async fn do_backup_read(
        &self,
        id: String,
        offset: u64,
        max: u32,
    ) -> Result<BackupChunk, ApiError> {
        self.check(Permission::VaultAdmin, Scope::Platform, "backup_read")
            .await?;
        let rt = self.rt.clone();
        let chunk = {
            let id = id.clone();
            tokio::task::spawn_blocking(move || rt.backups.read(&id, offset, max))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(backup_err)?
        };
        if chunk.done {
            let _ = self
                .rt
                .system_event(
                    "backup.sent",
                    None,
                    "ok",
                    format!(
                        "backup {id}: {} bytes, manifest sha256 {}",
                        offset + chunk.data.len() as u64,
                        chunk.sha256.as_deref().unwrap_or("")
                    ),
                )
                .await;
        }
        Ok(chunk)
    }
}
