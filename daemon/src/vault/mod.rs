//! The credential vault: a master key in the OS keyring (never in the state dir), data keys
//! wrapped by it, credential values sealed with a data key and bound by associated data to
//! their tenant, agent, name and version. Without the master key in the keyring the vault
//! is *sealed*: nothing opens until an operator unseals it with the recovery key shown once
//! at `init`. Values live decrypted only in memory, only for delivery to their own agent.

pub mod crypto;

use crate::store::{AgentKey, Store, StoreError};
use agenfleet_protocol::{
    now_ms, CredentialInfo, CredentialVersion, SecretValue, VaultState, VaultStatus,
};
use crypto::Key32;
use hmac::{Hmac, Mac};
use rusqlite::{params, OptionalExtension};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::RwLock;

/// Longest credential value accepted.
pub const MAX_VALUE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("the vault is not initialised: run `agenfleet vault init`")]
    NotInitialized,
    #[error("the vault is already initialised")]
    AlreadyInitialized,
    #[error("the vault is SEALED: run `agenfleet vault unseal` with the recovery key")]
    Sealed,
    #[error("wrong recovery key: it does not open this vault")]
    WrongRecoveryKey,
    #[error("malformed recovery key: expected 64 hex digits (dashes and spaces are ignored)")]
    MalformedRecoveryKey,
    #[error("the OS keyring cannot hold the master key: {0}")]
    Keyring(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} does not decrypt: the stored ciphertext was altered or moved")]
    Corrupt(String),
    #[error("vault storage: {0}")]
    Store(String),
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> Self {
        VaultError::Store(e.to_string())
    }
}

impl From<rusqlite::Error> for VaultError {
    fn from(e: rusqlite::Error) -> Self {
        VaultError::Store(e.to_string())
    }
}

struct Keys {
    mk: Key32,
    hmac: Key32,
    /// The audit log's signing key, escrowed here (see `escrow_audit_key`).
    audit: Option<Key32>,
    data: HashMap<u64, Key32>,
    active: u64,
}

/// What `export_for` answers.
pub struct ExportedVault {
    pub meta: Vec<(String, Vec<u8>)>,
    pub keys: Vec<(u64, Vec<u8>)>,
    pub recovery: SecretValue,
}

pub struct Vault {
    store: Store,
    instance: String,
    keys: RwLock<Option<Keys>>,
    keyring: String,
}

fn aad_dk(id: u64) -> Vec<u8> {
    format!("agenfleet|data-key|{id}").into_bytes()
}

fn aad_cred(k: &AgentKey, name: &str, version: u32) -> Vec<u8> {
    format!(
        "agenfleet|credential|{}|{}|{name}|{version}",
        k.tenant, k.name
    )
    .into_bytes()
}

/// Credential names: like agent names, plus `_` and `.`.
pub fn check_cred_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(VaultError::Invalid(format!(
            "credential name `{name}` may hold 1–64 of A-Z a-z 0-9 - _ . and must start with a letter or digit"
        )))
    }
}

/// A value to seal holds 1 to `MAX_VALUE` bytes (`what` names it in the error).
fn check_size(value: &SecretValue, what: &str) -> Result<(), VaultError> {
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err(VaultError::Invalid(format!(
            "{what} must hold 1 to {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

fn format_recovery(k: &[u8; 32]) -> String {
    let h = hex::encode(k);
    h.as_bytes()
        .chunks(8)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect::<Vec<_>>()
        .join("-")
}

fn parse_recovery(s: &SecretValue) -> Result<Key32, VaultError> {
    let digits: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        String::from_utf8_lossy(s.expose())
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect(),
    );
    let bytes = zeroize::Zeroizing::new(
        hex::decode(digits.as_str()).map_err(|_| VaultError::MalformedRecoveryKey)?,
    );
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| VaultError::MalformedRecoveryKey)?;
    Ok(zeroize::Zeroizing::new(arr))
}

impl Vault {
    fn keyring_name(&self) -> String {
        format!("vault-master-{}", self.instance)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        Ok(self.store.with(|c| {
            c.query_row(
                "SELECT value FROM vault_meta WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
        })?)
    }

    fn instance_aad(&self, what: &str) -> Vec<u8> {
        format!("agenfleet|{what}|{}", self.instance).into_bytes()
    }

    /// The vault material another installation (`instance`) needs to open what is sealed
    /// under data keys `key_ids`, under a new master key of its own whose recovery key is
    /// answered (once; it is kept nowhere): the check value, the recovery-wrapped master
    /// key, the HMAC key (as `vault_meta` rows), and each data key wrapped anew (id →
    /// wrapped). The values themselves are not touched (their associated data names no
    /// installation), and this vault's own master key never leaves it.
    pub fn export_for(&self, instance: &str, key_ids: &[u64]) -> Result<ExportedVault, VaultError> {
        self.with_keys(|k| {
            let mk = crypto::random_key();
            let rk = crypto::random_key();
            let aad = |what: &str| format!("agenfleet|{what}|{instance}").into_bytes();
            let meta = vec![
                (
                    "mk_check".to_string(),
                    crypto::seal(&mk, b"agenfleet-vault-check", &aad("mk-check")),
                ),
                (
                    "mk_recovery".to_string(),
                    crypto::seal(&rk, mk.as_slice(), &aad("mk-recovery")),
                ),
                (
                    "hmac_key".to_string(),
                    crypto::seal(&mk, k.hmac.as_slice(), &aad("hmac-key")),
                ),
            ];
            let mut keys = Vec::new();
            for id in key_ids {
                let dk = k.data.get(id).ok_or_else(|| {
                    VaultError::Corrupt(format!("data key {id} is not in the vault"))
                })?;
                keys.push((*id, crypto::seal(&mk, dk.as_slice(), &aad_dk(*id))));
            }
            Ok(ExportedVault {
                meta,
                keys,
                recovery: SecretValue::new(format_recovery(&rk).into_bytes()),
            })
        })
    }

    /// Opens the vault: unsealed if the keyring holds this vault's master key.
    pub fn open(store: Store, instance: String) -> Vault {
        let v = Vault {
            store,
            instance,
            keys: RwLock::new(None),
            keyring: "kernel keyring (keyutils)".into(),
        };
        match v.meta("mk_check") {
            Ok(Some(_)) => match crate::keyring::get(&v.keyring_name()) {
                Ok(Some(mk)) if mk.len() == 32 => {
                    let mut arr = [0u8; 32];
                    arr.copy_from_slice(&mk);
                    match v.load_keys(zeroize::Zeroizing::new(arr)) {
                        Ok(()) => tracing::info!("vault unsealed from the keyring"),
                        Err(e) => tracing::error!(error = %e, "the keyring's master key does not open this vault: SEALED"),
                    }
                }
                Ok(_) => tracing::warn!("vault SEALED: the keyring holds no master key (after a reboot?); `agenfleet vault unseal`"),
                Err(e) => tracing::error!(error = %e, "vault SEALED: the keyring is not usable"),
            },
            Ok(None) => tracing::info!("vault not initialised yet (`agenfleet vault init`)"),
            Err(e) => tracing::error!(error = %e, "cannot read the vault"),
        }
        v
    }

    /// Unwraps every data key with `mk`, which must pass the check value.
    fn load_keys(&self, mk: Key32) -> Result<(), VaultError> {
        let check = self.meta("mk_check")?.ok_or(VaultError::NotInitialized)?;
        crypto::open(&mk, &check, &self.instance_aad("mk-check"))
            .ok_or(VaultError::WrongRecoveryKey)?;
        let hmac_blob = self
            .meta("hmac_key")?
            .ok_or_else(|| VaultError::Store("hmac key missing".into()))?;
        let hmac = crypto::open_key(&mk, &hmac_blob, &self.instance_aad("hmac-key"))
            .ok_or_else(|| VaultError::Corrupt("the vault's HMAC key".into()))?;
        let rows: Vec<(u64, Vec<u8>, bool)> = self.store.with(|c| {
            let mut st = c.prepare("SELECT id, wrapped, active FROM vault_keys ORDER BY id")?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get(1)?,
                        r.get::<_, i64>(2)? != 0,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        let audit = match self.meta("audit_key")? {
            Some(blob) => Some(
                crypto::open_key(&mk, &blob, &self.instance_aad("audit-key"))
                    .ok_or_else(|| VaultError::Corrupt("the escrowed audit signing key".into()))?,
            ),
            None => None,
        };
        let mut data = HashMap::new();
        let mut active = 0;
        for (id, wrapped, is_active) in rows {
            let k = crypto::open_key(&mk, &wrapped, &aad_dk(id))
                .ok_or_else(|| VaultError::Corrupt(format!("data key {id}")))?;
            data.insert(id, k);
            if is_active {
                active = id;
            }
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Keys {
            mk,
            hmac,
            audit,
            data,
            active,
        });
        Ok(())
    }

    pub fn state(&self) -> VaultState {
        if self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return VaultState::Unsealed;
        }
        match self.meta("mk_check") {
            Ok(Some(_)) => VaultState::Sealed,
            _ => VaultState::Uninitialized,
        }
    }

    pub fn status(&self) -> Result<VaultStatus, VaultError> {
        let (data_keys, active, uses): (i64, Option<i64>, Option<i64>) = self.store.with(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM vault_keys", [], |r| r.get(0))?;
            let a: Option<(i64, i64)> = c
                .query_row(
                    "SELECT id, uses FROM vault_keys WHERE active = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok((n, a.map(|x| x.0), a.map(|x| x.1)))
        })?;
        // Credentials of dedicated tenants are in their own files: every file counts.
        let creds: i64 = self
            .store
            .each(|c| {
                c.query_row("SELECT COUNT(*) FROM credential_meta", [], |r| {
                    r.get::<_, i64>(0)
                })
            })?
            .into_iter()
            .sum();
        Ok(VaultStatus {
            state: self.state(),
            data_keys: data_keys as u32,
            active_key: active.map(|a| a as u64),
            active_key_uses: uses.unwrap_or(0) as u64,
            credentials: creds as u64,
            keyring: self.keyring.clone(),
        })
    }

    /// Creates the master key (into the keyring), the first data key and the recovery key,
    /// which is returned once and never stored in the clear.
    pub fn init(&self) -> Result<SecretValue, VaultError> {
        if self.meta("mk_check")?.is_some() {
            return Err(VaultError::AlreadyInitialized);
        }
        let mk = crypto::random_key();
        let rk = crypto::random_key();
        let hmac = crypto::random_key();
        let dk = crypto::random_key();
        // Into the keyring first: a vault whose key cannot be kept must not be created.
        crate::keyring::set(&self.keyring_name(), mk.as_slice())
            .map_err(|e| VaultError::Keyring(e.to_string()))?;
        let now = now_ms() as i64;
        let check = crypto::seal(
            &mk,
            b"agenfleet-vault-check",
            &self.instance_aad("mk-check"),
        );
        let by_rk = crypto::seal(&rk, mk.as_slice(), &self.instance_aad("mk-recovery"));
        let hmac_w = crypto::seal(&mk, hmac.as_slice(), &self.instance_aad("hmac-key"));
        self.store.with(|c| {
            let tx = c.transaction()?;
            tx.execute("INSERT INTO vault_meta (key, value) VALUES ('mk_check', ?1)", params![check])?;
            tx.execute("INSERT INTO vault_meta (key, value) VALUES ('mk_recovery', ?1)", params![by_rk])?;
            tx.execute("INSERT INTO vault_meta (key, value) VALUES ('hmac_key', ?1)", params![hmac_w])?;
            tx.execute("INSERT INTO vault_keys (id, wrapped, created_ms, uses, active) VALUES (1, ?1, ?2, 0, 1)",
                params![crypto::seal(&mk, dk.as_slice(), &aad_dk(1)), now])?;
            tx.commit()
        })?;
        self.load_keys(mk)?;
        Ok(SecretValue::new(format_recovery(&rk).into_bytes()))
    }

    /// Opens a sealed vault with the recovery key and puts the master key back in the keyring.
    pub fn unseal(&self, recovery: &SecretValue) -> Result<(), VaultError> {
        let rk = parse_recovery(recovery)?;
        let by_rk = self
            .meta("mk_recovery")?
            .ok_or(VaultError::NotInitialized)?;
        let mk = crypto::open_key(&rk, &by_rk, &self.instance_aad("mk-recovery"))
            .ok_or(VaultError::WrongRecoveryKey)?;
        self.load_keys(mk.clone())?;
        crate::keyring::set(&self.keyring_name(), mk.as_slice())
            .map_err(|e| VaultError::Keyring(e.to_string()))?;
        Ok(())
    }

    fn with_keys<T>(
        &self,
        f: impl FnOnce(&Keys) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let g = self.keys.read().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(k) => f(k),
            None => Err(match self.state() {
                VaultState::Uninitialized => VaultError::NotInitialized,
                _ => VaultError::Sealed,
            }),
        }
    }

    /// Replaces the master key: rewraps the data keys (not the values) and issues a new
    /// recovery key, returned once.
    pub fn rekey(&self) -> Result<SecretValue, VaultError> {
        let new_mk = crypto::random_key();
        let new_rk = crypto::random_key();
        let (wrapped, hmac_w, audit_w) = self.with_keys(|k| {
            let wrapped: Vec<(u64, Vec<u8>)> = k
                .data
                .iter()
                .map(|(id, dk)| (*id, crypto::seal(&new_mk, dk.as_slice(), &aad_dk(*id))))
                .collect();
            Ok((
                wrapped,
                crypto::seal(&new_mk, k.hmac.as_slice(), &self.instance_aad("hmac-key")),
                k.audit
                    .as_ref()
                    .map(|a| crypto::seal(&new_mk, a.as_slice(), &self.instance_aad("audit-key"))),
            ))
        })?;
        let check = crypto::seal(
            &new_mk,
            b"agenfleet-vault-check",
            &self.instance_aad("mk-check"),
        );
        let by_rk = crypto::seal(
            &new_rk,
            new_mk.as_slice(),
            &self.instance_aad("mk-recovery"),
        );
        let old_mk = self.with_keys(|k| Ok(k.mk.clone()))?;
        // Keyring first, then the database in one transaction; on a failure put the old
        // key back so the keyring and the data never disagree.
        crate::keyring::set(&self.keyring_name(), new_mk.as_slice())
            .map_err(|e| VaultError::Keyring(e.to_string()))?;
        let r = self.store.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare("UPDATE vault_keys SET wrapped = ?2 WHERE id = ?1")?;
                for (id, w) in &wrapped {
                    st.execute(params![*id as i64, w])?;
                }
            }
            tx.execute(
                "UPDATE vault_meta SET value = ?1 WHERE key = 'mk_check'",
                params![check],
            )?;
            tx.execute(
                "UPDATE vault_meta SET value = ?1 WHERE key = 'mk_recovery'",
                params![by_rk],
            )?;
            tx.execute(
                "UPDATE vault_meta SET value = ?1 WHERE key = 'hmac_key'",
                params![hmac_w],
            )?;
            if let Some(a) = &audit_w {
                tx.execute(
                    "UPDATE vault_meta SET value = ?1 WHERE key = 'audit_key'",
                    params![a],
                )?;
            }
            tx.commit()
        });
        if let Err(e) = r {
            let _ = crate::keyring::set(&self.keyring_name(), old_mk.as_slice());
            return Err(e.into());
        }
        if let Some(k) = self
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            k.mk = new_mk;
        }
        Ok(SecretValue::new(format_recovery(&new_rk).into_bytes()))
    }

    /// Adds a data key that encrypts every new value from now on; returns its id.
    pub fn rotate_key(&self) -> Result<u64, VaultError> {
        let (id, wrapped, dk) = self.with_keys(|k| {
            let id = k.data.keys().max().copied().unwrap_or(0) + 1;
            let dk = crypto::random_key();
            Ok((id, crypto::seal(&k.mk, dk.as_slice(), &aad_dk(id)), dk))
        })?;
        self.store.with(|c| {
            let tx = c.transaction()?;
            tx.execute("UPDATE vault_keys SET active = 0", [])?;
            tx.execute(
                "INSERT INTO vault_keys (id, wrapped, created_ms, uses, active) VALUES (?1, ?2, ?3, 0, 1)",
                params![id as i64, wrapped, now_ms() as i64],
            )?;
            tx.commit()
        })?;
        if let Some(k) = self
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            k.data.insert(id, dk);
            k.active = id;
        }
        Ok(id)
    }

    /// HMAC-SHA256 of a value under the vault's HMAC key (first 16 hex): what audit
    /// records and metadata carry instead of the value.
    pub fn hmac(&self, value: &SecretValue) -> Result<String, VaultError> {
        self.with_keys(|k| {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(k.hmac.as_slice())
                .map_err(|e| VaultError::Store(e.to_string()))?;
            m.update(value.expose());
            Ok(hex::encode(m.finalize().into_bytes())[..16].to_string())
        })
    }

    /// Stores a new version of a credential: version 1 with `rotate = false` (which
    /// refuses an existing name), the next version with `rotate = true` (which needs one).
    /// With rotation, older versions are revoked after `grace_secs` (0: at once).
    pub fn put(
        &self,
        agent: &AgentKey,
        name: &str,
        value: &SecretValue,
        rotate: bool,
        grace_secs: u64,
    ) -> Result<CredentialInfo, VaultError> {
        check_cred_name(name)?;
        check_size(value, "a credential value")?;
        let hmac = self.hmac(value)?;
        let (key_id, sealed_for) = self.active_key()?;
        let now = now_ms() as i64;
        let who = format!("{}/{name}", agent);
        // The key's use is counted first, in the platform's file (a dedicated tenant's
        // credentials are in a file of its own): a write that then fails counts one use
        // too many, the safe side of a limit on uses.
        self.store.with(|c| {
            c.execute(
                "UPDATE vault_keys SET uses = uses + 1 WHERE id = ?1",
                params![key_id as i64],
            )
        })?;
        self.store.tenant(&agent.tenant).with(|c| -> rusqlite::Result<Result<(), VaultError>> {
            let tx = c.transaction()?;
            let current: Option<i64> = tx.query_row(
                "SELECT MAX(version) FROM t_credentials WHERE agent = ?1 AND name = ?2",
                params![agent.name, name],
                |r| r.get(0),
            )?;
            let version = match (current, rotate) {
                (Some(_), false) => return Ok(Err(VaultError::Exists(format!("credential {who} exists; rotate it instead")))),
                (None, true) => return Ok(Err(VaultError::NotFound(format!("no credential {who} to rotate; set it first")))),
                (Some(v), true) => v as u32 + 1,
                (None, false) => 1,
            };
            let sealed = crypto::seal(&sealed_for, value.expose(), &aad_cred(agent, name, version));
            tx.execute(
                "INSERT INTO t_credentials (agent, name, version, key_id, sealed, value_hmac, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![agent.name, name, version, key_id as i64, sealed, hmac, now],
            )?;
            if rotate {
                let at = now + (grace_secs as i64) * 1000;
                if grace_secs == 0 {
                    tx.execute(
                        "UPDATE t_credentials SET revoked_ms = ?4 WHERE agent = ?1 AND name = ?2 AND version < ?3 AND revoked_ms IS NULL",
                        params![agent.name, name, version, now],
                    )?;
                } else {
                    tx.execute(
                        "UPDATE t_credentials SET revoke_at_ms = ?4 WHERE agent = ?1 AND name = ?2 AND version < ?3 AND revoked_ms IS NULL",
                        params![agent.name, name, version, at],
                    )?;
                }
                tx.execute(
                    "UPDATE t_credential_meta SET last_rotated_ms = ?3 WHERE agent = ?1 AND name = ?2",
                    params![agent.name, name, now],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO t_credential_meta (agent, name, created_ms) VALUES (?1, ?2, ?3)",
                    params![agent.name, name, now],
                )?;
            }
            tx.commit()?;
            Ok(Ok(()))
        })??;
        self.show(agent, name)
    }

    /// Revokes one version (or every usable version) of a credential, at once.
    pub fn revoke(
        &self,
        agent: &AgentKey,
        name: &str,
        version: Option<u32>,
    ) -> Result<CredentialInfo, VaultError> {
        check_cred_name(name)?;
        let now = now_ms() as i64;
        let n = self.store.tenant(&agent.tenant).with(|c| {
            crate::store::tenant::changes(c, |c| match version {
                Some(v) => c.execute(
                    "UPDATE t_credentials SET revoked_ms = ?4 WHERE agent = ?1 AND name = ?2 AND version = ?3 AND revoked_ms IS NULL",
                    params![agent.name, name, v, now],
                ),
                None => c.execute(
                    "UPDATE t_credentials SET revoked_ms = ?3 WHERE agent = ?1 AND name = ?2 AND revoked_ms IS NULL",
                    params![agent.name, name, now],
                ),
            })
        })?;
        let info = self.show(agent, name)?;
        if n == 0 {
            return Err(VaultError::NotFound(match version {
                Some(v) => format!("credential {agent}/{name} has no usable version {v}"),
                None => format!("credential {agent}/{name} has no usable version"),
            }));
        }
        Ok(info)
    }

    fn usable(v: &CredentialVersion, now: u64) -> bool {
        v.revoked_ms.is_none() && v.revoke_at_ms.is_none_or(|t| t > now)
    }

    /// Metadata of one credential (never its value).
    pub fn show(&self, agent: &AgentKey, name: &str) -> Result<CredentialInfo, VaultError> {
        self.list(agent)?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| VaultError::NotFound(format!("no credential {agent}/{name}")))
    }

    /// Metadata of every credential of an agent.
    pub fn list(&self, agent: &AgentKey) -> Result<Vec<CredentialInfo>, VaultError> {
        let now = now_ms();
        let (metas, versions) = self.store.tenant(&agent.tenant).with(|c| {
            let mut st = c.prepare(
                "SELECT name, created_ms, last_rotated_ms, last_delivered_ms FROM t_credential_meta
                 WHERE agent = ?1 ORDER BY name",
            )?;
            let metas = st
                .query_map(params![agent.name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?, r.get::<_, Option<i64>>(3)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut st = c.prepare(
                "SELECT name, version, created_ms, revoked_ms, revoke_at_ms, key_id, value_hmac FROM t_credentials
                 WHERE agent = ?1 ORDER BY name, version",
            )?;
            let versions = st
                .query_map(params![agent.name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        CredentialVersion {
                            version: r.get(1)?,
                            created_ms: r.get::<_, i64>(2)? as u64,
                            revoked_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                            revoke_at_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                            data_key: r.get::<_, i64>(5)? as u64,
                            value_hmac: r.get(6)?,
                        },
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((metas, versions))
        })?;
        Ok(metas
            .into_iter()
            .map(|(name, created, rotated, delivered)| {
                let vs: Vec<CredentialVersion> = versions
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .collect();
                let current = vs
                    .iter()
                    .rev()
                    .find(|v| Self::usable(v, now))
                    .map(|v| v.version);
                CredentialInfo {
                    tenant: agent.tenant.clone(),
                    agent: agent.name.clone(),
                    name,
                    current_version: current,
                    created_ms: created as u64,
                    last_rotated_ms: rotated.map(|v| v as u64),
                    last_delivered_ms: delivered.map(|v| v as u64),
                    versions: vs,
                }
            })
            .collect())
    }

    /// The current usable value of each of `agent`'s credentials, decrypted, for delivery
    /// to that agent only; records the delivery time.
    pub fn current_values(
        &self,
        agent: &AgentKey,
    ) -> Result<Vec<(String, u32, SecretValue)>, VaultError> {
        let now = now_ms();
        let infos = self.list(agent)?;
        let mut out = Vec::new();
        for info in infos {
            let Some(version) = info.current_version else {
                continue;
            };
            let (key_id, sealed): (i64, Vec<u8>) = self.store.tenant(&agent.tenant).with(|c| {
                c.query_row(
                    "SELECT key_id, sealed FROM t_credentials WHERE agent = ?1 AND name = ?2 AND version = ?3",
                    params![agent.name, info.name, version],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })?;
            let value = self.with_keys(|k| {
                let dk = k.data.get(&(key_id as u64)).ok_or_else(|| {
                    VaultError::Corrupt(format!(
                        "credential {agent}/{} version {version} (unknown data key {key_id})",
                        info.name
                    ))
                })?;
                crypto::open(dk, &sealed, &aad_cred(agent, &info.name, version)).ok_or_else(|| {
                    VaultError::Corrupt(format!(
                        "credential {agent}/{} version {version}",
                        info.name
                    ))
                })
            })?;
            out.push((info.name.clone(), version, SecretValue::new(value.to_vec())));
        }
        self.store.tenant(&agent.tenant).with(|c| {
            c.execute(
                "UPDATE t_credential_meta SET last_delivered_ms = ?2 WHERE agent = ?1",
                params![agent.name, now as i64],
            )
        })?;
        Ok(out)
    }

    /// The data key new values are sealed with: (its id, the key).
    fn active_key(&self) -> Result<(u64, Key32), VaultError> {
        self.with_keys(|k| {
            let dk = k
                .data
                .get(&k.active)
                .ok_or_else(|| VaultError::Store("no active data key".into()))?;
            Ok((k.active, dk.clone()))
        })
    }

    /// Seals a tenant-level key (a provider's or a connection's) under the active data key,
    /// bound by `aad`: (data key id, sealed bytes, HMAC of the value). The caller stores
    /// them with its own row.
    pub fn seal_value(
        &self,
        value: &SecretValue,
        aad: &[u8],
    ) -> Result<(u64, Vec<u8>, String), VaultError> {
        check_size(value, "a key")?;
        let hmac = self.hmac(value)?;
        let (key_id, dk) = self.active_key()?;
        let sealed = crypto::seal(&dk, value.expose(), aad);
        self.store.with(|c| {
            c.execute(
                "UPDATE vault_keys SET uses = uses + 1 WHERE id = ?1",
                params![key_id as i64],
            )
        })?;
        Ok((key_id, sealed, hmac))
    }

    /// Opens what `seal_value` sealed with the same `aad`; `what` names it in errors.
    pub fn open_value(
        &self,
        key_id: u64,
        sealed: &[u8],
        aad: &[u8],
        what: &str,
    ) -> Result<SecretValue, VaultError> {
        self.with_keys(|k| {
            let dk = k.data.get(&key_id).ok_or_else(|| {
                VaultError::Corrupt(format!("{what} (unknown data key {key_id})"))
            })?;
            crypto::open(dk, sealed, aad)
                .map(|v| SecretValue::new(v.to_vec()))
                .ok_or_else(|| VaultError::Corrupt(what.to_string()))
        })
    }

    /// Keeps the audit log's signing key sealed under the master key, so that a host
    /// whose keyring lost it (a reboot, a restore on another host) gets the same key back
    /// at `unseal` and its checkpoints stay verifiable against the earlier ones.
    pub fn escrow_audit_key(&self, seed: &[u8]) -> Result<(), VaultError> {
        if seed.len() != 32 {
            return Err(VaultError::Invalid(
                "an audit signing key is 32 bytes".into(),
            ));
        }
        let blob =
            self.with_keys(|k| Ok(crypto::seal(&k.mk, seed, &self.instance_aad("audit-key"))))?;
        self.store.with(|c| {
            c.execute(
                "INSERT INTO vault_meta (key, value) VALUES ('audit_key', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![blob],
            )
        })?;
        let mut arr = [0u8; 32];
        arr.copy_from_slice(seed);
        if let Some(k) = self
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            k.audit = Some(zeroize::Zeroizing::new(arr));
        }
        Ok(())
    }

    /// Whether the audit signing key is escrowed here (readable only when unsealed).
    pub fn has_audit_key(&self) -> bool {
        matches!(self.meta("audit_key"), Ok(Some(_)))
    }

    /// The escrowed audit signing key (None: sealed, or none escrowed).
    pub fn audit_key(&self) -> Option<Key32> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|k| k.audit.clone())
    }

    /// Forgets the keys in memory (the keyring keeps the master key).
    pub fn seal(&self) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Seals and removes the master key (and the audit signing key it escrows) from the
    /// keyring too: only the recovery key opens the vault again (an operator's answer to a
    /// suspected compromise, and what a reboot does to the kernel keyring).
    pub fn seal_and_forget(&self) -> Result<(), VaultError> {
        if self.state() == VaultState::Uninitialized {
            return Err(VaultError::NotInitialized);
        }
        // The audit signing key goes too when the vault holds it: it comes back at unseal.
        if self.has_audit_key() {
            crate::keyring::delete(&crate::audit::checkpoint::key_name(&self.instance))
                .map_err(|e| VaultError::Keyring(e.to_string()))?;
        }
        self.seal();
        crate::keyring::delete(&self.keyring_name()).map_err(|e| VaultError::Keyring(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
