//! The SQLite store: schema and migrations, and the records the daemon keeps about tenants,
//! projects, agents (spec, desired state, container id, restart bookkeeping) and operators.
//!
//! Writes use `synchronous=FULL` in WAL mode: a change the daemon acknowledged survives
//! `kill -9` of the daemon (and a power cut). Agent rows are keyed by `(tenant, name)` and
//! point into their project with a composite foreign key.

use agenfleet_protocol::spec::SpecVersion;
use agenfleet_protocol::{AgentSpec, AgentState, DesiredState, ExitInfo};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

mod schema;
pub mod tenant;
pub mod tiers;

use schema::MIGRATIONS;
pub use tenant::{TenantStore, TENANT_TABLES};
use tiers::{DbFile, Tiers};
pub use tiers::{MoveReport, Tier};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored record is damaged: {0}")]
    Corrupt(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("the database lock was poisoned by a panic")]
    Poisoned,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

/// The key of an agent: its tenant and its name (unique inside the tenant).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentKey {
    pub tenant: String,
    pub name: String,
}

impl std::fmt::Display for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// Everything the daemon persists about one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub key: AgentKey,
    pub project: String,
    pub spec: AgentSpec,
    pub desired: DesiredState,
    pub state: AgentState,
    pub message: Option<String>,
    pub container_id: Option<String>,
    pub image_ref: Option<String>,
    pub restarts: u32,
    /// Unix ms of the supervisor's restarts inside the current policy window.
    pub restart_times: Vec<u64>,
    pub last_exit: Option<ExitInfo>,
    pub created_at_ms: u64,
}

/// A handle on the database: the shared file, and the files of dedicated tenants (see
/// `tiers`); cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<DbFile>,
    tiers: Arc<std::sync::RwLock<Tiers>>,
    /// Held by a tenant's change of tier, and by whoever needs none to happen for a
    /// while (a backup); taken before `tiers`, never while holding it.
    moves: Arc<std::sync::Mutex<()>>,
    /// The directory of the shared file (dedicated tenants' files are in `tenants/`
    /// under it); None for an in-memory store.
    dir: Option<Arc<std::path::PathBuf>>,
}

impl AgentRecord {
    /// A new agent as its spec describes it: wanted running, not started yet.
    pub fn new(spec: AgentSpec, created_at_ms: u64) -> AgentRecord {
        AgentRecord {
            key: AgentKey {
                tenant: spec.tenant.clone(),
                name: spec.name.clone(),
            },
            project: spec.project.clone(),
            spec,
            desired: DesiredState::Running,
            state: AgentState::Pending,
            message: None,
            container_id: None,
            image_ref: None,
            restarts: 0,
            restart_times: vec![],
            last_exit: None,
            created_at_ms,
        }
    }
}

fn desired_str(d: DesiredState) -> &'static str {
    match d {
        DesiredState::Running => "running",
        DesiredState::Stopped => "stopped",
    }
}

fn parse_desired(s: &str) -> Result<DesiredState, StoreError> {
    match s {
        "running" => Ok(DesiredState::Running),
        "stopped" => Ok(DesiredState::Stopped),
        other => Err(StoreError::Corrupt(format!(
            "unknown desired state `{other}`"
        ))),
    }
}

fn parse_state(s: &str) -> Result<AgentState, StoreError> {
    Ok(match s {
        "pending" => AgentState::Pending,
        "running" => AgentState::Running,
        "backing-off" => AgentState::BackingOff,
        "stopped" => AgentState::Stopped,
        "failed" => AgentState::Failed,
        "unknown" => AgentState::Unknown,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown agent state `{other}`"
            )))
        }
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ExitJson {
    code: i64,
    oom_killed: bool,
    at_ms: u64,
}

/// Copies the database file at `db` to `to` as one consistent snapshot (`VACUUM INTO`)
/// from a read-only connection of its own: the daemon's connection is not held, writers go
/// on. The copy is synced.
pub fn snapshot_file(db: &Path, to: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let target = to
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", to.display()))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| format!("cannot copy the database: {e}"))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync the database copy: {e}"))
}

/// Checks a database file offline (SQLite's `integrity_check`) and answers the instance it
/// belongs to; the error says what is wrong.
pub fn check_file(db: &Path) -> Result<String, String> {
    let conn = check_integrity(db)?;
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'instance_id'",
        [],
        |r| r.get(0),
    )
    .map_err(|e| format!("has no instance id: {e}"))
}

/// Opens a database file read-only and runs SQLite's integrity check on it.
pub fn check_integrity(db: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("does not open: {e}"))?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if check != "ok" {
        return Err(format!("fails SQLite's integrity check: {check}"));
    }
    Ok(conn)
}

/// Checks a dedicated tenant's database file offline (as `check_file`) and answers the
/// tenant it belongs to.
pub fn check_tenant_file(db: &Path) -> Result<String, String> {
    let conn = check_integrity(db)?;
    conn.query_row("SELECT value FROM meta WHERE key = 'tenant'", [], |r| {
        r.get(0)
    })
    .map_err(|e| format!("names no tenant: {e}"))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date,
    /// with the files of the dedicated tenants it names (in `tenants/` beside it).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shared = DbFile::open(Connection::open(path)?, None)?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let tiers = Tiers::load(&shared, &dir)?;
        Ok(Store {
            shared: Arc::new(shared),
            tiers: Arc::new(std::sync::RwLock::new(tiers)),
            moves: Arc::default(),
            dir: Some(Arc::new(dir)),
        })
    }

    /// An in-memory database (unit tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Ok(Store {
            shared: Arc::new(DbFile::open(Connection::open_in_memory()?, None)?),
            tiers: Arc::default(),
            moves: Arc::default(),
            dir: None,
        })
    }

    /// The tiers, shared: every statement runs under this, so a tenant's move (which
    /// holds it exclusively) never interleaves with one.
    fn tiers(&self) -> Result<std::sync::RwLockReadGuard<'_, Tiers>, StoreError> {
        self.tiers.read().map_err(|_| StoreError::Poisoned)
    }

    /// A handle bound to `tenant` (see `TenantStore`).
    pub fn tenant(&self, tenant: &str) -> TenantStore<'_> {
        TenantStore {
            store: self,
            tenant: tenant.to_string(),
        }
    }

    /// Runs `f` on the connection with platform-wide reach (migrations, the supervisor's
    /// own records, operators and roles). Tenant-facing reads go through `tenant`.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let _tiers = self.tiers()?;
        let mut conn = self.shared.lock()?;
        Ok(f(&mut conn)?)
    }

    /// Runs `f` with platform-wide reach on every file — the shared one first, then each
    /// dedicated tenant's in name order — and answers what each gave. For the few reads
    /// that span tenants (all agents at start, a token by id, an operator's roles).
    pub fn each<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let tiers = self.tiers()?;
        let mut out = Vec::with_capacity(1 + tiers.dedicated.len());
        for file in std::iter::once(&self.shared).chain(tiers.dedicated.values()) {
            out.push(f(&mut *file.lock()?)?);
        }
        Ok(out)
    }

    /// The rows `sql` gives in every file (see `each`), as one list in file order.
    pub fn rows_everywhere<T>(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        Ok(self
            .each(|c| {
                let mut st = c.prepare(sql)?;
                let rows = st
                    .query_map(params, &mut map)?
                    .collect::<Result<Vec<T>, _>>();
                rows
            })?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Runs `f` with platform-wide reach on the file that holds `tenant`'s rows (the
    /// shared one for a standard tenant and for the platform's own, `None`): incidents
    /// and escalations, which are not behind the tenant views, are kept with their tenant.
    pub fn with_rows_of<T>(
        &self,
        tenant: Option<&str>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let tiers = self.tiers()?;
        let file = tiers.file_of(tenant, &self.shared);
        let mut conn = file.lock()?;
        Ok(f(&mut conn)?)
    }

    /// The id of this daemon's installation, created on first use. Its containers carry it
    /// in a label, so two daemons on one engine never touch each other's containers.
    pub fn instance_id(&self) -> Result<String, StoreError> {
        let _tiers = self.tiers()?;
        let conn = self.shared.lock()?;
        let existing: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'instance_id'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(id);
        }
        let id = format!("{:08x}", rand::random::<u32>());
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('instance_id', ?1)",
            params![id],
        )?;
        Ok(id)
    }

    /// Inserts a new agent (and its tenant and project if new). Fails with `Exists` when
    /// the tenant already has an agent of that name.
    pub fn insert_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        self.insert_agent_as(rec, "agenfleetd")
    }

    /// `insert_agent`, recording `author` on the spec's version 1.
    pub fn insert_agent_as(&self, rec: &AgentRecord, author: &str) -> Result<(), StoreError> {
        let spec_json = serde_json::to_string(&rec.spec)
            .map_err(|e| StoreError::Corrupt(format!("spec does not serialize: {e}")))?;
        let existing = self.tenant(&rec.key.tenant).with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR IGNORE INTO t_tenants (created_at_ms) VALUES (?1)",
                params![rec.created_at_ms as i64],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO t_projects (id, created_at_ms) VALUES (?1, ?2)",
                params![rec.project, rec.created_at_ms as i64],
            )?;
            // Some(purge time) when the name is taken.
            let existing: Option<Option<i64>> = tx
                .query_row(
                    "SELECT purge_at_ms FROM t_agents WHERE name = ?1",
                    params![rec.key.name],
                    |r| r.get(0),
                )
                .optional()?;
            if existing.is_none() {
                tx.execute(
                    "INSERT INTO t_agents (name, project_id, spec_json, desired, state,
                        created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        rec.key.name,
                        rec.project,
                        spec_json,
                        desired_str(rec.desired),
                        rec.state.as_str(),
                        rec.created_at_ms as i64
                    ],
                )?;
                tx.execute(
                    "INSERT INTO t_spec_versions (agent, version, spec_json, created_ms, author,
                        note) VALUES (?1, 1, ?2, ?3, ?4, 'created')",
                    params![rec.key.name, spec_json, rec.created_at_ms as i64, author],
                )?;
                tx.commit()?;
            }
            Ok(existing)
        })?;
        match existing {
            Some(Some(_)) => Err(StoreError::Exists(format!(
                "agent {} (deleted; its data is waiting for the scheduled purge)",
                rec.key
            ))),
            Some(None) => Err(StoreError::Exists(format!("agent {}", rec.key))),
            None => self.save_agent(rec),
        }
    }

    /// Saves the runtime fields of an agent (desired state, state, container, restarts).
    pub fn save_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        let times = serde_json::to_string(&rec.restart_times)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let exit = match &rec.last_exit {
            Some(e) => Some(
                serde_json::to_string(&ExitJson {
                    code: e.code,
                    oom_killed: e.oom_killed,
                    at_ms: e.at_ms,
                })
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            None => None,
        };
        self.tenant(&rec.key.tenant).with(|c| {
            c.execute(
                "UPDATE t_agents SET desired = ?2, state = ?3, message = ?4, container_id = ?5,
                    image_ref = ?6, restarts = ?7, restart_times_json = ?8, last_exit_json = ?9
                 WHERE name = ?1",
                params![
                    rec.key.name,
                    desired_str(rec.desired),
                    rec.state.as_str(),
                    rec.message,
                    rec.container_id,
                    rec.image_ref,
                    rec.restarts,
                    times,
                    exit
                ],
            )
        })?;
        Ok(())
    }

    /// An agent's stored spec (None: no such agent in its tenant).
    pub fn agent_spec(&self, key: &AgentKey) -> Result<Option<AgentSpec>, StoreError> {
        let json: Option<String> = self.tenant(&key.tenant).with(|c| {
            c.query_row(
                "SELECT spec_json FROM t_agents WHERE name = ?1",
                params![key.name],
                |r| r.get(0),
            )
            .optional()
        })?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| StoreError::Corrupt(format!("agent {key}: spec: {e}")))
        })
        .transpose()
    }

    /// Every stored version of an agent's spec, oldest first (empty: no such agent).
    pub fn spec_versions(&self, key: &AgentKey) -> Result<Vec<SpecVersion>, StoreError> {
        self.query_spec_versions(key, "ORDER BY version", None)
    }

    /// One version of an agent's spec (None: the one in force), if it has it.
    pub fn spec_version_at(
        &self,
        key: &AgentKey,
        version: Option<u32>,
    ) -> Result<Option<SpecVersion>, StoreError> {
        let v = match version {
            Some(n) => self.query_spec_versions(key, "AND version = ?2", Some(n))?,
            None => self.query_spec_versions(key, "ORDER BY version DESC LIMIT 1", None)?,
        };
        Ok(v.into_iter().next())
    }

    /// The agent's spec versions that `tail` (after `WHERE agent = ?1`; `?2` is `version`)
    /// selects, each spec parsed.
    fn query_spec_versions(
        &self,
        key: &AgentKey,
        tail: &str,
        version: Option<u32>,
    ) -> Result<Vec<SpecVersion>, StoreError> {
        let rows: Vec<(u32, String, i64, String, String)> = self.tenant(&key.tenant).with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT version, spec_json, created_ms, author, note FROM t_spec_versions
                 WHERE agent = ?1 {tail}"
            ))?;
            let map =
                |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
            let rows = match version {
                Some(n) => st.query_map(params![key.name, n], map)?.collect(),
                None => st.query_map(params![key.name], map)?.collect(),
            };
            rows
        })?;
        rows.into_iter()
            .map(|(version, json, created_ms, author, note)| {
                let spec: AgentSpec = serde_json::from_str(&json).map_err(|e| {
                    StoreError::Corrupt(format!("agent {key}: spec version {version}: {e}"))
                })?;
                Ok(SpecVersion {
                    version,
                    hash: spec.hash(),
                    spec,
                    created_ms: created_ms as u64,
                    author,
                    note,
                })
            })
            .collect()
    }

    /// The version of the agent's spec in force (0: no such agent).
    pub fn spec_version(&self, key: &AgentKey) -> Result<u32, StoreError> {
        self.tenant(&key.tenant).with(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM t_spec_versions WHERE agent = ?1",
                params![key.name],
                |r| r.get(0),
            )
        })
    }

    /// Stores `spec` as the agent's next version and puts it in force, in one transaction,
    /// if the version in force is still `expected` (else `Conflict` with the current one).
    /// Answers the new version.
    pub fn put_spec_version(
        &self,
        key: &AgentKey,
        spec: &AgentSpec,
        expected: u32,
        author: &str,
        note: &str,
    ) -> Result<Result<u32, u32>, StoreError> {
        let json = serde_json::to_string(spec)
            .map_err(|e| StoreError::Corrupt(format!("spec does not serialize: {e}")))?;
        let now = agenfleet_protocol::now_ms() as i64;
        self.tenant(&key.tenant).with(|c| {
            let tx = c.transaction()?;
            let current: u32 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM t_spec_versions WHERE agent = ?1",
                params![key.name],
                |r| r.get(0),
            )?;
            if current != expected {
                return Ok(Err(current));
            }
            let next = current + 1;
            tx.execute(
                "INSERT INTO t_spec_versions (agent, version, spec_json, created_ms, author, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.name, next, json, now, author, note],
            )?;
            tx.execute(
                "UPDATE t_agents SET spec_json = ?2 WHERE name = ?1",
                params![key.name, json],
            )?;
            tx.commit()?;
            Ok(Ok(next))
        })
    }

    /// Every tenant's id, sorted (platform-wide).
    pub fn tenant_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = self.rows_everywhere("SELECT id FROM tenants", &[], |r| r.get(0))?;
        ids.sort();
        Ok(ids)
    }

    /// Sets a tenant's own audit retention in days (None: the platform's). False when
    /// the tenant does not exist.
    pub fn set_tenant_audit_retention(
        &self,
        tenant: &str,
        days: Option<f64>,
    ) -> Result<bool, StoreError> {
        // (A view's trigger does the write, so the statement's own count says nothing.)
        if !self.tenant_exists(tenant)? {
            return Ok(false);
        }
        self.tenant(tenant).with(|c| {
            c.execute(
                "UPDATE t_tenants SET audit_retention_days = ?1",
                params![days],
            )
        })?;
        Ok(true)
    }

    /// Tenants with an audit retention of their own: (tenant, days).
    pub fn tenant_audit_retention(&self) -> Result<Vec<(String, f64)>, StoreError> {
        let mut rows: Vec<(String, f64)> = self.rows_everywhere(
            "SELECT id, audit_retention_days FROM tenants WHERE audit_retention_days IS NOT NULL",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }

    /// Whether the tenant exists (it does while it has an agent, project, role or token).
    pub fn tenant_exists(&self, tenant: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .tenant(tenant)
            .with(|c| c.query_row("SELECT COUNT(*) FROM t_tenants", [], |r| r.get(0)))?;
        Ok(n > 0)
    }

    /// Deletes a tenant's own rows — role bindings, tokens, policies, providers and
    /// connections, projects, then the
    /// tenant — in one transaction. Its agents must be gone first (each has its own purge).
    pub fn delete_tenant_rows(&self, tenant: &str) -> Result<(), StoreError> {
        // Access and configuration go at once; the projects and the tenant's own row only
        // when no agent record is left (agents whose purge waits keep them; the last
        // purge finishes the tenant, see `finish_tenant_purge`).
        let waiting: i64 = self
            .tenant(tenant)
            .with(|c| c.query_row("SELECT COUNT(*) FROM t_agents", [], |r| r.get(0)))?;
        self.tenant(tenant).with(|c| {
            let tx = c.transaction()?;
            for sql in [
                "DELETE FROM t_role_bindings",
                "DELETE FROM t_tokens",
                "DELETE FROM t_policy_versions",
                "DELETE FROM t_upstreams",
                "DELETE FROM t_usage_snapshots",
            ] {
                tx.execute(sql, [])?;
            }
            if waiting == 0 {
                tx.execute("DELETE FROM t_projects", [])?;
                tx.execute("DELETE FROM t_tenants", [])?;
            }
            tx.commit()
        })?;
        if waiting == 0 {
            self.retire_dedicated(tenant)?;
        }
        if waiting > 0 {
            self.with(|c| {
                c.execute(
                    "INSERT OR REPLACE INTO tenant_purges (tenant_id, requested_ms) VALUES (?1, ?2)",
                    params![tenant, agenfleet_protocol::now_ms() as i64],
                )
            })?;
        }
        Ok(())
    }

    /// After an agent's purge: a deleted tenant whose last waiting agent this was loses
    /// its projects and its row now. Answers whether the tenant went.
    pub fn finish_tenant_purge(&self, tenant: &str) -> Result<bool, StoreError> {
        let pending: i64 = self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM tenant_purges WHERE tenant_id = ?1",
                params![tenant],
                |r| r.get(0),
            )
        })?;
        if pending == 0 {
            return Ok(false);
        }
        let left: i64 = self
            .tenant(tenant)
            .with(|c| c.query_row("SELECT COUNT(*) FROM t_agents", [], |r| r.get(0)))?;
        if left > 0 {
            return Ok(false);
        }
        self.tenant(tenant).with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM t_projects", [])?;
            tx.execute("DELETE FROM t_tenants", [])?;
            tx.commit()
        })?;
        self.with(|c| {
            c.execute(
                "DELETE FROM tenant_purges WHERE tenant_id = ?1",
                params![tenant],
            )
        })?;
        self.retire_dedicated(tenant)?;
        Ok(true)
    }

    /// Deleted tenants waiting for their agents' purges.
    pub fn tenant_purges(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT tenant_id FROM tenant_purges ORDER BY tenant_id")?;
            let v = st.query_map([], |r| r.get(0))?.collect();
            v
        })
    }

    /// A tenant in use again (an agent created in it) is no longer waiting to go.
    pub fn cancel_tenant_purge(&self, tenant: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM tenant_purges WHERE tenant_id = ?1",
                params![tenant],
            )
        })
        .map(|_| ())
    }

    /// Removes an agent's record with its credentials and scope versions.
    pub fn delete_agent(&self, key: &AgentKey) -> Result<bool, StoreError> {
        let n = self.tenant(&key.tenant).with(|c| {
            tenant::changes(c, |c| {
                c.execute("DELETE FROM t_agents WHERE name = ?1", params![key.name])
            })
        })?;
        Ok(n > 0)
    }

    /// Marks a deleted agent's data for purging at `at_ms` (the agent is gone already).
    pub fn schedule_purge(&self, key: &AgentKey, at_ms: u64) -> Result<(), StoreError> {
        self.tenant(&key.tenant).with(|c| {
            c.execute(
                "UPDATE t_agents SET purge_at_ms = ?2 WHERE name = ?1",
                params![key.name, at_ms as i64],
            )
        })?;
        Ok(())
    }

    /// Deleted agents whose data waits for a purge, with when it is due.
    pub fn pending_purges(&self) -> Result<Vec<(AgentKey, u64)>, StoreError> {
        let mut v = self.rows_everywhere(
            "SELECT tenant_id, name, purge_at_ms FROM agents WHERE purge_at_ms IS NOT NULL",
            &[],
            |r| {
                Ok((
                    AgentKey {
                        tenant: r.get(0)?,
                        name: r.get(1)?,
                    },
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            },
        )?;
        v.sort_by_key(|(_, at)| *at);
        Ok(v)
    }

    /// Every agent, ordered by tenant and name.
    pub fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = self.rows_everywhere(
            "SELECT tenant_id, name, project_id, spec_json, desired, state, message,
                        container_id, image_ref, restarts, restart_times_json, last_exit_json,
                        created_at_ms
                 FROM agents WHERE purge_at_ms IS NULL",
            &[],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, u32>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, i64>(12)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (
                tenant,
                name,
                project,
                spec_json,
                desired,
                state,
                message,
                cid,
                image,
                restarts,
                times,
                exit,
                created,
            ) = row;
            let spec: AgentSpec = serde_json::from_str(&spec_json)
                .map_err(|e| StoreError::Corrupt(format!("agent {tenant}/{name}: spec: {e}")))?;
            let restart_times: Vec<u64> = serde_json::from_str(&times).map_err(|e| {
                StoreError::Corrupt(format!("agent {tenant}/{name}: restarts: {e}"))
            })?;
            let last_exit = match exit {
                Some(j) => {
                    let e: ExitJson = serde_json::from_str(&j).map_err(|e| {
                        StoreError::Corrupt(format!("agent {tenant}/{name}: last exit: {e}"))
                    })?;
                    Some(ExitInfo {
                        reason: None,
                        code: e.code,
                        oom_killed: e.oom_killed,
                        unhealthy: false,
                        at_ms: e.at_ms,
                    })
                }
                None => None,
            };
            out.push(AgentRecord {
                key: AgentKey { tenant, name },
                project,
                spec,
                desired: parse_desired(&desired)?,
                state: parse_state(&state)?,
                message,
                container_id: cid,
                image_ref: image,
                restarts,
                restart_times,
                last_exit,
                created_at_ms: created.max(0) as u64,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The operator registered for a uid: (name, role).
    pub fn operator_by_uid(&self, uid: u32) -> Result<Option<(String, String)>, StoreError> {
        let _tiers = self.tiers()?;
        let conn = self.shared.lock()?;
        Ok(conn
            .query_row(
                "SELECT name, role FROM operators WHERE uid = ?1",
                params![uid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests;
