//! Personal access tokens, for scripts that cannot use a local uid: scoped to one tenant or
//! project and a set of permissions the creator holds there, with an expiry; the secret is
//! shown once and stored only as its SHA-256; revocable. A token is checked again on every
//! call, so expiry and revocation bite at once, also on connections opened before.

use super::{Binding, Caller, Permission, RoleError, Scope, ScopedRole, TokenLimits};
use crate::store::Store;
use agenfleet_protocol::{now_ms, SecretValue, TokenInfo};
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

/// Longest lifetime a token may have.
pub const MAX_TTL_SECS: u64 = 366 * 86_400;

fn sha(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of two hex digests.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Creates a token for `creator`; every permission must be one the creator holds at that
/// scope, and platform-wide powers are never given to tokens.
pub fn create(
    store: &Store,
    creator: &Caller,
    name: &str,
    tenant: &str,
    project: Option<&str>,
    permissions: &[String],
    ttl_secs: u64,
) -> Result<(TokenInfo, SecretValue), RoleError> {
    agenfleet_protocol::spec::check_name("token", name).map_err(RoleError::Invalid)?;
    if creator.token.is_some() {
        return Err(RoleError::Invalid("a token cannot create tokens".into()));
    }
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(RoleError::Invalid(format!(
            "expiry must be between 1 s and {MAX_TTL_SECS} s"
        )));
    }
    if permissions.is_empty() {
        return Err(RoleError::Invalid(
            "a token needs at least one permission".into(),
        ));
    }
    let scope = match project {
        Some(p) => Scope::Project(tenant, p),
        None => Scope::Tenant(tenant),
    };
    let mut perms = Vec::new();
    for p in permissions {
        let perm = Permission::parse(p).ok_or_else(|| {
            RoleError::Invalid(format!(
                "unknown permission `{p}` (one of: {})",
                Permission::ALL
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if matches!(
            perm,
            Permission::ImageBuild
                | Permission::VaultAdmin
                | Permission::OperatorsAdmin
                | Permission::Grant
        ) {
            return Err(RoleError::Invalid(format!(
                "{p} cannot be given to a token"
            )));
        }
        if !creator.can(perm, scope) {
            return Err(RoleError::Invalid(format!(
                "not permitted: you do not hold {p} on {scope}, so no token of yours can"
            )));
        }
        perms.push(perm.as_str().to_string());
    }
    let id = format!("{:08x}", rand::random::<u32>());
    let secret = format!("agf_{id}_{}", hex::encode(rand::random::<[u8; 24]>()));
    let now = now_ms();
    let expires = now + ttl_secs * 1000;
    store.tenant(tenant).with(|c| {
        c.execute(
            "INSERT INTO t_tokens (id, secret_sha256, name, creator_uid, project_id, permissions, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![id, sha(&secret), name, creator.uid, project.unwrap_or(""), perms.join(","), now as i64, expires as i64],
        )
    })?;
    let info =
        get(store, &id)?.ok_or_else(|| RoleError::NotFound("the new token vanished".into()))?;
    Ok((info, SecretValue::new(secret.into_bytes())))
}

pub fn get(store: &Store, id: &str) -> Result<Option<TokenInfo>, RoleError> {
    // A dedicated tenant's tokens are in its own file: every file is asked.
    Ok(store
        .each(|c| {
            c.query_row(
                "SELECT id, name, creator_uid, tenant_id, project_id, permissions, created_ms, expires_ms, revoked_ms FROM tokens WHERE id = ?1",
                params![id],
                |r| {
                    let project: String = r.get(4)?;
                    let perms: String = r.get(5)?;
                    Ok(TokenInfo {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        creator_uid: r.get(2)?,
                        tenant: r.get(3)?,
                        project: (!project.is_empty()).then_some(project),
                        permissions: perms.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                        created_ms: r.get::<_, i64>(6)? as u64,
                        expires_ms: r.get::<_, i64>(7)? as u64,
                        revoked_ms: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
                    })
                },
            )
            .optional()
        })?
        .into_iter()
        .flatten()
        .next())
}

pub fn list(store: &Store, caller: &Caller) -> Result<Vec<TokenInfo>, RoleError> {
    let mut rows: Vec<(i64, String, u32)> =
        store.rows_everywhere("SELECT created_ms, id, creator_uid FROM tokens", &[], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    rows.sort();
    let ids: Vec<String> = rows
        .into_iter()
        .filter(|(_, _, uid)| caller.platform_admin || *uid == caller.uid)
        .map(|(_, id, _)| id)
        .collect();
    let mut out = Vec::new();
    for id in ids {
        out.extend(get(store, &id)?);
    }
    Ok(out)
}

pub fn revoke(store: &Store, caller: &Caller, id: &str) -> Result<TokenInfo, RoleError> {
    let t = get(store, id)?.ok_or_else(|| RoleError::NotFound(format!("no token {id}")))?;
    if !(caller.platform_admin || (caller.token.is_none() && caller.uid == t.creator_uid)) {
        // Someone else's token answers like an unknown one.
        return Err(RoleError::NotFound(format!("no token {id}")));
    }
    store.tenant(&t.tenant).with(|c| {
        c.execute(
            "UPDATE t_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            params![id, now_ms() as i64],
        )
    })?;
    get(store, id)?.ok_or_else(|| RoleError::NotFound(format!("no token {id}")))
}

/// The caller a token stands for, or why it stands for nobody.
pub fn resolve(
    store: &Store,
    secret: &SecretValue,
    creator: impl FnOnce(u32) -> Caller,
) -> Result<Caller, String> {
    let text = std::str::from_utf8(secret.expose()).map_err(|_| "malformed token".to_string())?;
    let parts: Vec<&str> = text.trim().splitn(3, '_').collect();
    let [prefix, id, _] = parts.as_slice() else {
        return Err("malformed token (expected agf_<id>_<secret>)".into());
    };
    if *prefix != "agf" || id.len() != 8 {
        return Err("malformed token (expected agf_<id>_<secret>)".into());
    }
    let stored: Option<String> = store
        .each(|c| {
            c.query_row(
                "SELECT secret_sha256 FROM tokens WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(|e| e.to_string())?
        .into_iter()
        .flatten()
        .next();
    let info = match (stored, get(store, id).map_err(|e| e.to_string())?) {
        (Some(h), Some(info)) if same(&h, &sha(text.trim())) => info,
        _ => return Err("unknown token".into()),
    };
    if info.revoked_ms.is_some() {
        return Err(format!("token {} was revoked", info.id));
    }
    if info.expires_ms <= now_ms() {
        return Err(format!("token {} has expired", info.id));
    }
    let owner = creator(info.creator_uid);
    let permissions = info
        .permissions
        .iter()
        .filter_map(|p| Permission::parse(p))
        .collect();
    Ok(Caller {
        uid: owner.uid,
        operator: format!("token {} ({}) of {}", info.id, info.name, owner.operator),
        platform_admin: false,
        known: true,
        bindings: vec![Binding {
            role: if info.project.is_some() {
                ScopedRole::ProjectAdmin
            } else {
                ScopedRole::TenantAdmin
            },
            tenant: info.tenant.clone(),
            project: info.project.clone(),
        }],
        token: Some(TokenLimits {
            id: info.id,
            permissions,
            creator: Box::new(owner),
            expires_ms: info.expires_ms,
        }),
        denial: None,
    })
}
