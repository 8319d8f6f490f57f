//! Isolation tiers. A **standard** tenant's rows live in the shared database file behind
//! the tenant views (`tenant`); a **dedicated** tenant's rows — every tenant table, and its
//! incidents and escalations — live in a file of its own, `tenants/<tenant>.db` beside
//! the shared one, opened by its own connection that only that tenant's handle reaches.
//! The platform's tables (operators, the vault, the outbox, the tier registry) stay in
//! the shared file: a dedicated file has the same schema, but writing a platform table in
//! it is refused by its authorizer, so they stay empty.
//!
//! The shared file's `tenant_tiers` table is the registry: a dedicated tenant has a row.
//! A move (`Store::move_tenant`) holds the tiers exclusively — every statement of the
//! store waits for it, so nothing changes under the copy — then copies the tenant's rows
//! into the target file, checks every moved table's row count and SHA-256 digest on both
//! sides, and switches in one transaction of the shared file (the registry row and the
//! rows leaving or arriving there). A crash before that commit leaves the tenant where it
//! was (a half-made file is set aside at the next start); after it, where it went (the
//! file left behind is set aside likewise).
//!
//! Foreign keys are not enforced inside a dedicated file: three of its tables refer to
//! the platform's (credentials and providers to the vault's keys, role bindings to the
//! operators), which are in the shared file, and SQLite checks keys within one file only.
//! The views' triggers keep a tenant's own rows consistent as they do in the shared file.

use super::tenant::{self, Bound};
use super::{StoreError, MIGRATIONS, TENANT_TABLES};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Where a tenant's rows live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Standard,
    Dedicated,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Dedicated => "dedicated",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "standard" => Some(Tier::Standard),
            "dedicated" => Some(Tier::Dedicated),
            _ => None,
        }
    }
}

/// The tables a tenant's move carries, with their tenant column; parents before children.
fn moved_tables() -> impl Iterator<Item = (&'static str, &'static str)> {
    TENANT_TABLES
        .iter()
        .map(|t| (t.name, t.tenant_column))
        .chain([("incidents", "tenant_id"), ("escalations", "tenant_id")])
}

/// One database file and its connection.
pub(super) struct DbFile {
    conn: Mutex<Connection>,
    pub(super) bound: Arc<Bound>,
}

impl DbFile {
    /// Brings the file's schema up to date and sets up the tenant views and the
    /// authorizer. `dedicated`: the tenant whose own file this is.
    pub(super) fn open(conn: Connection, dedicated: Option<&str>) -> Result<DbFile, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Foreign keys are off while migrations rebuild tables, checked after, then on
        // (in the shared file; see the module's header for a dedicated one).
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let v = i as i64 + 1;
            if v > version {
                let tx = conn.unchecked_transaction()?;
                tx.execute_batch(m)?;
                let broken: Option<String> = tx
                    .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                    .optional()?;
                if let (Some(table), None) = (broken, dedicated) {
                    return Err(StoreError::Corrupt(format!(
                        "migration {v} leaves a row of `{table}` without its parent"
                    )));
                }
                tx.pragma_update(None, "user_version", v)?;
                tx.commit()?;
            }
        }
        if let Some(t) = dedicated {
            let owner: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE key = 'tenant'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            match owner {
                None => {
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('tenant', ?1)",
                        params![t],
                    )?;
                }
                Some(o) if o == t => {}
                Some(o) => {
                    return Err(StoreError::Corrupt(format!(
                        "the file for tenant {t} belongs to tenant {o}"
                    )))
                }
            }
        } else {
            conn.pragma_update(None, "foreign_keys", "ON")?;
        }
        let bound = Arc::new(Bound::for_file(dedicated.is_some()));
        tenant::register(&conn, bound.clone())?;
        conn.execute_batch(&tenant::views_sql(&conn)?)?;
        let b = bound.clone();
        conn.authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
            tenant::authorize(&b, ctx)
        }));
        Ok(DbFile {
            conn: Mutex::new(conn),
            bound,
        })
    }

    pub(super) fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

/// The dedicated tenants and their open files.
#[derive(Default)]
pub(super) struct Tiers {
    pub(super) dedicated: BTreeMap<String, Arc<DbFile>>,
}

impl Tiers {
    /// The file holding `tenant`'s rows (the shared one for a standard tenant or None).
    pub(super) fn file_of<'a>(
        &'a self,
        tenant: Option<&str>,
        shared: &'a Arc<DbFile>,
    ) -> &'a Arc<DbFile> {
        tenant.and_then(|t| self.dedicated.get(t)).unwrap_or(shared)
    }

    /// Opens the files the registry names; a file it does not name (a move cut short, or
    /// the file a move back left behind) is set aside, never read.
    pub(super) fn load(shared: &DbFile, dir: &Path) -> Result<Tiers, StoreError> {
        let names: Vec<String> = {
            let c = shared.lock()?;
            let mut st = c.prepare("SELECT tenant_id FROM tenant_tiers ORDER BY tenant_id")?;
            let v = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            v
        };
        let mut tiers = Tiers::default();
        for t in &names {
            let path = file_path(dir, t);
            if !path.exists() {
                return Err(StoreError::Corrupt(format!(
                    "dedicated tenant {t}: its database {} is missing",
                    path.display()
                )));
            }
            let file = DbFile::open(Connection::open(&path)?, Some(t))?;
            tiers.dedicated.insert(t.clone(), Arc::new(file));
        }
        let tdir = dir.join(TENANTS_DIR);
        if let Ok(entries) = std::fs::read_dir(&tdir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let registered = name
                    .strip_suffix(".db")
                    .is_some_and(|t| names.iter().any(|n| n == t));
                let ours = name.ends_with(".db") || name.ends_with(MAKING);
                if ours && !registered {
                    let aside = tdir.join(format!("{name}.unregistered-{}", now()));
                    tracing::warn!(file = %e.path().display(), aside = %aside.display(),
                        "a tenant file the registry does not name (a move cut short) is set aside");
                    std::fs::rename(e.path(), &aside)
                        .map_err(|e| StoreError::Io(format!("cannot set {name} aside: {e}")))?;
                }
            }
        }
        Ok(tiers)
    }
}

/// The dedicated tenants' directory under the state dir.
pub const TENANTS_DIR: &str = "tenants";
/// The suffix of a tenant file being made (set aside if found at start).
const MAKING: &str = ".db.making";

/// A dedicated tenant's file.
pub fn file_path(dir: &Path, tenant: &str) -> PathBuf {
    dir.join(TENANTS_DIR).join(format!("{tenant}.db"))
}

fn now() -> i64 {
    agenfleet_protocol::now_ms() as i64
}

/// One moved table: rows and digest, the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: String,
    pub rows: u64,
    pub sha256: String,
}

/// What a move did.
#[derive(Debug, Clone)]
pub struct MoveReport {
    pub from: Tier,
    pub to: Tier,
    pub tables: Vec<TableCheck>,
    /// How long the store was held (nothing else ran meanwhile).
    pub held_ms: u64,
}

/// Rows of `tenant` in `schema.table`: how many, and a SHA-256 over every value of every
/// row in a fixed order (type-tagged, length-prefixed).
fn digest(
    c: &Connection,
    schema: &str,
    table: &str,
    tc: &str,
    tenant: &str,
) -> rusqlite::Result<TableCheck> {
    let ncols: usize = c.query_row(
        &format!("SELECT COUNT(*) FROM pragma_table_info('{table}', '{schema}')"),
        [],
        |r| r.get(0),
    )?;
    let order: Vec<String> = (1..=ncols).map(|i| i.to_string()).collect();
    let mut st = c.prepare(&format!(
        "SELECT * FROM {schema}.{table} WHERE {tc} = ?1 ORDER BY {}",
        order.join(", ")
    ))?;
    let mut rows = st.query(params![tenant])?;
    let (mut n, mut h) = (0u64, Sha256::new());
    while let Some(r) = rows.next()? {
        n += 1;
        for i in 0..ncols {
            match r.get_ref(i)? {
                ValueRef::Null => h.update([0]),
                ValueRef::Integer(v) => {
                    h.update([1]);
                    h.update(v.to_le_bytes());
                }
                ValueRef::Real(v) => {
                    h.update([2]);
                    h.update(v.to_le_bytes());
                }
                ValueRef::Text(b) | ValueRef::Blob(b) => {
                    h.update([3]);
                    h.update((b.len() as u64).to_le_bytes());
                    h.update(b);
                }
            }
        }
    }
    Ok(TableCheck {
        table: table.to_string(),
        rows: n,
        sha256: hex::encode(h.finalize()),
    })
}

/// Compares every moved table of `tenant` in `main` and `mv`.
fn verify(c: &Connection, tenant: &str) -> Result<Vec<TableCheck>, StoreError> {
    let mut out = Vec::new();
    for (table, tc) in moved_tables() {
        let a = digest(c, "main", table, tc, tenant)?;
        let b = digest(c, "mv", table, tc, tenant)?;
        if a != b {
            return Err(StoreError::Corrupt(format!(
                "tenant {tenant}: table {table} differs after the copy ({} rows, {} vs {} rows, {}); nothing was switched",
                a.rows, a.sha256, b.rows, b.sha256
            )));
        }
        out.push(a);
    }
    Ok(out)
}

/// Sets the `moving` flag for as long as it lives.
struct Moving<'a>(&'a Bound);

impl<'a> Moving<'a> {
    fn new(b: &'a Bound) -> Moving<'a> {
        b.moving.store(true, Ordering::Release);
        Moving(b)
    }
}

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        self.0.moving.store(false, Ordering::Release);
    }
}

fn attach(c: &Connection, path: &Path) -> Result<(), StoreError> {
    let p = path
        .to_str()
        .ok_or_else(|| StoreError::Io(format!("{} is not UTF-8", path.display())))?;
    c.execute("ATTACH DATABASE ?1 AS mv", params![p])?;
    c.execute_batch("PRAGMA mv.synchronous = FULL;")?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Io(format!("cannot sync {}: {e}", dir.display())))
}

fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

impl super::Store {
    fn tiers_dir(&self) -> Result<&Path, StoreError> {
        self.dir
            .as_deref()
            .map(|d| d.as_path())
            .ok_or_else(|| StoreError::Invalid("an in-memory store has no tiers".into()))
    }

    /// The tier of a tenant (standard unless the registry names it).
    pub fn tier_of(&self, tenant: &str) -> Result<Tier, StoreError> {
        Ok(match self.tiers()?.dedicated.contains_key(tenant) {
            true => Tier::Dedicated,
            false => Tier::Standard,
        })
    }

    /// The dedicated tenants' files: (tenant, path).
    pub fn dedicated_files(&self) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let dir = match self.dir.as_deref() {
            Some(d) => d.clone(),
            None => return Ok(vec![]),
        };
        Ok(self
            .tiers()?
            .dedicated
            .keys()
            .map(|t| (t.clone(), file_path(&dir, t)))
            .collect())
    }

    /// Runs `f` while no tenant can change tier (a backup copies every file in one state
    /// of the tiers). Statements go on meanwhile: `f` may use the store.
    pub fn holding_tiers<T>(&self, f: impl FnOnce() -> T) -> Result<T, StoreError> {
        let _moves = self.moves.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(f())
    }

    /// Creates a tenant with no agents yet, in `tier`. `Exists` if it exists.
    pub fn create_tenant(&self, tenant: &str, tier: Tier) -> Result<(), StoreError> {
        let exists = || StoreError::Exists(format!("tenant {tenant}"));
        match tier {
            Tier::Standard => {
                // One insert decides (a tenant made meanwhile makes it fail), through the
                // tenant's handle: into its own file if it is a dedicated one.
                let r = self.tenant(tenant).with(|c| {
                    c.execute(
                        "INSERT INTO t_tenants (created_at_ms) VALUES (?1)",
                        params![now()],
                    )
                });
                match r {
                    Err(StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        Err(exists())
                    }
                    r => r.map(|_| ()),
                }
            }
            Tier::Dedicated => {
                let dir = self.tiers_dir()?.to_path_buf();
                let _moves = self.moves.lock().map_err(|_| StoreError::Poisoned)?;
                let mut tiers = self.tiers.write().map_err(|_| StoreError::Poisoned)?;
                // Checked under the locks: nothing can make the tenant meanwhile.
                let in_shared: i64 = self.shared.lock()?.query_row(
                    "SELECT COUNT(*) FROM tenants WHERE id = ?1",
                    params![tenant],
                    |r| r.get(0),
                )?;
                if in_shared > 0 || tiers.dedicated.contains_key(tenant) {
                    return Err(exists());
                }
                // Made aside, then named, then registered: a crash in between leaves an
                // unregistered file, set aside at the next start.
                let path = file_path(&dir, tenant);
                let making = dir.join(TENANTS_DIR).join(format!("{tenant}{MAKING}"));
                std::fs::create_dir_all(dir.join(TENANTS_DIR))
                    .map_err(|e| StoreError::Io(format!("cannot make tenants/: {e}")))?;
                remove_db_files(&making);
                {
                    let file = DbFile::open(Connection::open(&making)?, Some(tenant))?;
                    let c = file.lock()?;
                    let _moving = Moving::new(&file.bound);
                    c.execute(
                        "INSERT INTO tenants (id, created_at_ms) VALUES (?1, ?2)",
                        params![tenant, now()],
                    )?;
                    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
                }
                std::fs::File::open(&making)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| StoreError::Io(format!("cannot sync the new file: {e}")))?;
                std::fs::rename(&making, &path)
                    .map_err(|e| StoreError::Io(format!("cannot name {}: {e}", path.display())))?;
                sync_dir(&dir.join(TENANTS_DIR))?;
                self.shared.lock()?.execute(
                    "INSERT INTO tenant_tiers (tenant_id, tier, since_ms) VALUES (?1, 'dedicated', ?2)",
                    params![tenant, now()],
                )?;
                let file = DbFile::open(Connection::open(&path)?, Some(tenant))?;
                tiers.dedicated.insert(tenant.to_string(), Arc::new(file));
                Ok(())
            }
        }
    }

    /// Moves a tenant's rows to `to` (see the module's header). Everything else waits.
    pub fn move_tenant(&self, tenant: &str, to: Tier) -> Result<MoveReport, StoreError> {
        let dir = self.tiers_dir()?.to_path_buf();
        let _moves = self.moves.lock().map_err(|_| StoreError::Poisoned)?;
        let mut tiers = self.tiers.write().map_err(|_| StoreError::Poisoned)?;
        let started = Instant::now();
        let from = match tiers.dedicated.contains_key(tenant) {
            true => Tier::Dedicated,
            false => Tier::Standard,
        };
        let exists: i64 = tiers
            .file_of(Some(tenant), &self.shared)
            .lock()?
            .query_row(
                "SELECT COUNT(*) FROM tenants WHERE id = ?1",
                params![tenant],
                |r| r.get(0),
            )?;
        if exists == 0 {
            return Err(StoreError::NotFound(format!("no tenant `{tenant}`")));
        }
        if from == to {
            return Err(StoreError::Invalid(format!(
                "tenant {tenant} is {} already",
                to.as_str()
            )));
        }
        let path = file_path(&dir, tenant);
        let tables = match to {
            Tier::Dedicated => {
                let making = dir.join(TENANTS_DIR).join(format!("{tenant}{MAKING}"));
                std::fs::create_dir_all(dir.join(TENANTS_DIR))
                    .map_err(|e| StoreError::Io(format!("cannot make tenants/: {e}")))?;
                remove_db_files(&making);
                let res = self.copy_out(tenant, &making, &path, &dir);
                if res.is_err() {
                    remove_db_files(&making);
                    remove_db_files(&path);
                }
                let tables = res?;
                let file = DbFile::open(Connection::open(&path)?, Some(tenant))?;
                tiers.dedicated.insert(tenant.to_string(), Arc::new(file));
                tables
            }
            Tier::Standard => {
                let tables = self.copy_in(tenant, &path)?;
                tiers.dedicated.remove(tenant);
                remove_db_files(&path);
                sync_dir(&dir.join(TENANTS_DIR))?;
                tables
            }
        };
        Ok(MoveReport {
            from,
            to,
            tables,
            held_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Standard → dedicated: copy into `making`, verify, name it `path`, then one
    /// transaction of the shared file registers the tenant and removes its rows there.
    fn copy_out(
        &self,
        tenant: &str,
        making: &Path,
        path: &Path,
        dir: &Path,
    ) -> Result<Vec<TableCheck>, StoreError> {
        // The new file's schema, made by its own connection, closed again.
        drop(DbFile::open(Connection::open(making)?, Some(tenant))?);
        let c = self.shared.lock()?;
        let _moving = Moving::new(&self.shared.bound);
        attach(&c, making)?;
        // The connection's foreign keys would hold the copies in the new file to the
        // platform's tables there, which stay empty (see the module's header).
        c.pragma_update(None, "foreign_keys", "OFF")?;
        let copied = (|| -> Result<Vec<TableCheck>, StoreError> {
            let tx = c.unchecked_transaction()?;
            for (table, tc) in moved_tables() {
                tx.execute(
                    &format!("INSERT INTO mv.{table} SELECT * FROM main.{table} WHERE {tc} = ?1"),
                    params![tenant],
                )?;
            }
            let checks = verify(&tx, tenant)?;
            tx.commit()?;
            c.execute_batch("PRAGMA mv.wal_checkpoint(TRUNCATE);")?;
            Ok(checks)
        })();
        // Both restored whatever happened above.
        let detached = c.execute_batch("DETACH DATABASE mv;");
        let keys_on = c.pragma_update(None, "foreign_keys", "ON");
        let checks = copied?;
        detached?;
        keys_on?;
        std::fs::File::open(making)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Io(format!("cannot sync {}: {e}", making.display())))?;
        std::fs::rename(making, path)
            .map_err(|e| StoreError::Io(format!("cannot name {}: {e}", path.display())))?;
        sync_dir(&dir.join(TENANTS_DIR))?;
        // The switch.
        let tx = c.unchecked_transaction()?;
        tx.execute_batch("PRAGMA defer_foreign_keys = ON;")?;
        tx.execute(
            "INSERT INTO tenant_tiers (tenant_id, tier, since_ms) VALUES (?1, 'dedicated', ?2)",
            params![tenant, now()],
        )?;
        let tables: Vec<(&str, &str)> = moved_tables().collect();
        for (table, tc) in tables.iter().rev() {
            tx.execute(
                &format!("DELETE FROM main.{table} WHERE {tc} = ?1"),
                params![tenant],
            )?;
        }
        tx.commit()?;
        Ok(checks)
    }

    /// Dedicated → standard: in one transaction of the shared file, copy the rows in,
    /// verify them against the tenant's file, and drop the registry row.
    fn copy_in(&self, tenant: &str, path: &Path) -> Result<Vec<TableCheck>, StoreError> {
        let c = self.shared.lock()?;
        let _moving = Moving::new(&self.shared.bound);
        attach(&c, path)?;
        let done = (|| -> Result<Vec<TableCheck>, StoreError> {
            let tx = c.unchecked_transaction()?;
            for (table, tc) in moved_tables() {
                tx.execute(
                    &format!("INSERT INTO main.{table} SELECT * FROM mv.{table} WHERE {tc} = ?1"),
                    params![tenant],
                )?;
            }
            let checks = verify(&tx, tenant)?;
            tx.execute(
                "DELETE FROM tenant_tiers WHERE tenant_id = ?1",
                params![tenant],
            )?;
            tx.commit()?;
            Ok(checks)
        })();
        c.execute_batch("DETACH DATABASE mv;")?;
        done
    }

    /// A dedicated tenant whose last row went (deleted): its file and registry row go.
    pub fn retire_dedicated(&self, tenant: &str) -> Result<(), StoreError> {
        let Some(dir) = self.dir.as_deref().cloned() else {
            return Ok(());
        };
        let _moves = self.moves.lock().map_err(|_| StoreError::Poisoned)?;
        let mut tiers = self.tiers.write().map_err(|_| StoreError::Poisoned)?;
        if tiers.dedicated.remove(tenant).is_none() {
            return Ok(());
        }
        self.shared.lock()?.execute(
            "DELETE FROM tenant_tiers WHERE tenant_id = ?1",
            params![tenant],
        )?;
        remove_db_files(&file_path(&dir, tenant));
        sync_dir(&dir.join(TENANTS_DIR))
    }
}

/// Writes a dedicated tenant's archive files into `staging`: `agenfleet.db`, a new
/// platform database (a new installation id; a vault of its own for it — check value,
/// recovery-wrapped master key, HMAC key — holding the data keys the tenant's rows name,
/// the newest of them active; the tier registry's row), and `tenants/<tenant>.db`, a
/// snapshot of its file. Answers the new installation id.
/// `wrap(instance, key ids)` answers the vault's rows for the new installation: its
/// `vault_meta` rows, and each data key wrapped for it.
#[allow(clippy::type_complexity)]
pub fn export_tenant(
    store: &super::Store,
    tenant: &str,
    staging: &Path,
    wrap: impl FnOnce(&str, &[u64]) -> Result<(Vec<(String, Vec<u8>)>, Vec<(u64, Vec<u8>)>), String>,
) -> Result<String, StoreError> {
    let dir = store.tiers_dir()?.to_path_buf();
    let db = staging.join("agenfleet.db");
    let instance = super::Store::open(&db)?.instance_id()?;
    store.holding_tiers(|| -> Result<(), StoreError> {
        if store.tier_of(tenant)? != Tier::Dedicated {
            return Err(match store.tenant_exists(tenant)? {
                true => StoreError::Invalid(format!(
                    "tenant {tenant} is standard: only a dedicated tenant is backed up alone (`agenfleet tenants move {tenant} --tier dedicated`, or a full backup)"
                )),
                false => StoreError::NotFound(format!("no tenant `{tenant}`")),
            });
        }
        let mut keys: Vec<i64> = store.with_rows_of(Some(tenant), |c| {
            let mut st = c.prepare(
                "SELECT key_id FROM credentials UNION SELECT key_id FROM upstreams
                 UNION SELECT secret_key FROM triggers WHERE secret_key IS NOT NULL
                 UNION SELECT old_secret_key FROM triggers WHERE old_secret_key IS NOT NULL",
            )?;
            let v = st.query_map([], |r| r.get(0))?.collect();
            v
        })?;
        // (id, created, uses) of each data key the tenant's rows name (the active one if
        // none: the restored vault needs one to seal new values).
        let rows: Vec<(i64, i64, i64)> = store.with(|c| {
            if keys.is_empty() {
                keys.extend(
                    c.query_row("SELECT id FROM vault_keys WHERE active = 1", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()?,
                );
            }
            let mut st = c.prepare(
                "SELECT id, created_ms, uses FROM vault_keys
                 WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id",
            )?;
            let ids = serde_json::to_string(&keys).unwrap_or_default();
            let rows = st
                .query_map(params![ids], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>();
            rows
        })?;
        let ids: Vec<u64> = rows.iter().map(|r| r.0 as u64).collect();
        let (meta, wrapped) = wrap(&instance, &ids).map_err(StoreError::Io)?;
        // Written with a plain connection: this file is made here, for the archive.
        let c = Connection::open(&db)?;
        c.pragma_update(None, "synchronous", "FULL")?;
        let tx = c.unchecked_transaction()?;
        for (k, v) in &meta {
            tx.execute("INSERT INTO vault_meta (key, value) VALUES (?1, ?2)", params![k, v])?;
        }
        let newest = rows.iter().map(|r| r.0).max();
        for (id, created, uses) in &rows {
            let w = wrapped
                .iter()
                .find(|w| w.0 as i64 == *id)
                .ok_or_else(|| StoreError::Invalid(format!("data key {id} was not wrapped")))?;
            tx.execute(
                "INSERT INTO vault_keys (id, wrapped, created_ms, uses, active) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, w.1, created, uses, Some(*id) == newest],
            )?;
        }
        tx.execute(
            "INSERT INTO tenant_tiers (tenant_id, tier, since_ms) VALUES (?1, 'dedicated', ?2)",
            params![tenant, now()],
        )?;
        tx.commit()?;
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        drop(c);
        std::fs::create_dir_all(staging.join(TENANTS_DIR))
            .map_err(|e| StoreError::Io(format!("cannot make tenants/: {e}")))?;
        super::snapshot_file(
            &file_path(&dir, tenant),
            &staging.join(TENANTS_DIR).join(format!("{tenant}.db")),
        )
        .map_err(StoreError::Io)
    })??;
    Ok(instance)
}

#[cfg(test)]
#[path = "tiers_tests.rs"]
mod tests;
