//! The SQLite store: schema and migrations, and the records the daemon keeps about tenants,
//! projects, agents (spec, desired state, container id, restart bookkeeping) and operators.
//!
//! Writes use `synchronous=FULL` in WAL mode: a change the daemon acknowledged survives
//! `kill -9` of the daemon (and a power cut). Agent rows are keyed by `(tenant, name)` and
//! point into their project with a composite foreign key.

use agenfleet_protocol::{AgentSpec, AgentState, DesiredState, ExitInfo};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

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

const MIGRATIONS: &[&str] = &[
    // 1: the spine.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE tenants (id TEXT PRIMARY KEY, created_at_ms INTEGER NOT NULL);
     CREATE TABLE projects (
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        id TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, id));
     CREATE TABLE agents (
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        project_id TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        desired TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT,
        container_id TEXT,
        image_ref TEXT,
        restarts INTEGER NOT NULL DEFAULT 0,
        restart_times_json TEXT NOT NULL DEFAULT '[]',
        last_exit_json TEXT,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, name),
        FOREIGN KEY (tenant_id, project_id) REFERENCES projects(tenant_id, id));
     CREATE TABLE operators (
        uid INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL);",
    // 2: the vault. Keys are wrapped, values encrypted; nothing here opens without the
    // master key, which lives in the OS keyring.
    "CREATE TABLE vault_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE vault_keys (
        id INTEGER PRIMARY KEY,
        wrapped BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 0);
     CREATE TABLE credentials (
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        key_id INTEGER NOT NULL REFERENCES vault_keys(id),
        sealed BLOB NOT NULL,
        value_hmac TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER,
        revoke_at_ms INTEGER,
        PRIMARY KEY (tenant_id, agent, name, version),
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name) ON DELETE CASCADE);
     CREATE TABLE credential_meta (
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        name TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_rotated_ms INTEGER,
        last_delivered_ms INTEGER,
        PRIMARY KEY (tenant_id, agent, name),
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name) ON DELETE CASCADE);",
    // 3: roles bound to a tenant (project_id '') or to one of its projects.
    "CREATE TABLE role_bindings (
        uid INTEGER NOT NULL REFERENCES operators(uid) ON DELETE CASCADE,
        role TEXT NOT NULL,
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        project_id TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (uid, role, tenant_id, project_id));",
    // 4 (below) tokens; 5: deleted agents wait for their scheduled purge.
    // 4: personal access tokens, stored as SHA-256 of the secret only.
    "CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        secret_sha256 TEXT NOT NULL,
        name TEXT NOT NULL,
        creator_uid INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        project_id TEXT NOT NULL DEFAULT '',
        permissions TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked_ms INTEGER);",
    "ALTER TABLE agents ADD COLUMN purge_at_ms INTEGER;",
    // 6: published versions of agents' scopes and tenants' Cedar policies (immutable; the
    // latest version is in force, a rollback publishes a copy of an older one).
    "CREATE TABLE scope_versions (
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        version INTEGER NOT NULL,
        text TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (tenant_id, agent, version),
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name) ON DELETE CASCADE);
     CREATE TABLE policy_versions (
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        text TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (tenant_id, version));",
    // 7: incidents (one row each; the body is the whole incident as JSON).
    "CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        dedup_key TEXT NOT NULL,
        state TEXT NOT NULL,
        tenant_id TEXT,
        body_json TEXT NOT NULL,
        updated_ms INTEGER NOT NULL);
     CREATE INDEX incidents_state ON incidents(state, id);",
];

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Set while a tenant-bound handle runs a query (see `tenant`).
    tenant_mode: Arc<std::sync::atomic::AtomicBool>,
}

/// Tables that hold one tenant's data. Under a tenant-bound handle they may be read only
/// through the `t_*` views, which show the bound tenant's rows and nothing else.
pub const TENANT_TABLES: &[&str] = &[
    "tenants",
    "projects",
    "agents",
    "credentials",
    "credential_meta",
    "role_bindings",
    "tokens",
    "scope_versions",
    "policy_versions",
];

const TENANT_VIEWS: &str = "
    CREATE TEMP TABLE IF NOT EXISTS scope (tenant TEXT NOT NULL);
    CREATE TEMP VIEW IF NOT EXISTS t_projects AS
        SELECT * FROM main.projects WHERE tenant_id = (SELECT tenant FROM temp.scope LIMIT 1);
    CREATE TEMP VIEW IF NOT EXISTS t_agents AS
        SELECT * FROM main.agents WHERE tenant_id = (SELECT tenant FROM temp.scope LIMIT 1);
    CREATE TEMP VIEW IF NOT EXISTS t_credentials AS
        SELECT * FROM main.credentials WHERE tenant_id = (SELECT tenant FROM temp.scope LIMIT 1);
    CREATE TEMP VIEW IF NOT EXISTS t_credential_meta AS
        SELECT * FROM main.credential_meta WHERE tenant_id = (SELECT tenant FROM temp.scope LIMIT 1);
    CREATE TEMP VIEW IF NOT EXISTS t_scope_versions AS
        SELECT * FROM main.scope_versions WHERE tenant_id = (SELECT tenant FROM temp.scope LIMIT 1);
    CREATE TEMP VIEW IF NOT EXISTS t_policy_versions AS
        SELECT * FROM main.policy_versions WHERE tenant_id = (SELECT tenant FROM temp.scope LIMIT 1);";

/// A handle bound to one tenant: its queries read tenant tables only through the `t_*`
/// views, and the database refuses any other read of them (the guard is SQLite's
/// authorizer, so a query that forgets the tenant fails instead of leaking).
pub struct TenantStore<'a> {
    store: &'a Store,
    tenant: String,
}

impl TenantStore<'_> {
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering;
        let mut conn = self.store.lock()?;
        conn.execute("DELETE FROM temp.scope", [])?;
        conn.execute(
            "INSERT INTO temp.scope (tenant) VALUES (?1)",
            params![self.tenant],
        )?;
        struct Reset<'m>(&'m std::sync::atomic::AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        self.store.tenant_mode.store(true, Ordering::SeqCst);
        let _reset = Reset(&self.store.tenant_mode);
        Ok(f(&mut conn)?)
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

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (unit tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tenant_mode = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let v = i as i64 + 1;
            if v > version {
                let tx = conn.unchecked_transaction()?;
                tx.execute_batch(m)?;
                tx.pragma_update(None, "user_version", v)?;
                tx.commit()?;
            }
        }
        conn.execute_batch(TENANT_VIEWS)?;
        let mode = tenant_mode.clone();
        conn.authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
            use rusqlite::hooks::{AuthAction, Authorization};
            if !mode.load(std::sync::atomic::Ordering::SeqCst) {
                return Authorization::Allow;
            }
            match ctx.action {
                AuthAction::Read { table_name, .. } if TENANT_TABLES.contains(&table_name) => {
                    if ctx.accessor.is_some_and(|a| a.starts_with("t_")) {
                        Authorization::Allow
                    } else {
                        Authorization::Deny
                    }
                }
                _ => Authorization::Allow,
            }
        }));
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            tenant_mode,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
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
        let mut conn = self.lock()?;
        Ok(f(&mut conn)?)
    }

    /// The id of this daemon's installation, created on first use. Its containers carry it
    /// in a label, so two daemons on one engine never touch each other's containers.
    pub fn instance_id(&self) -> Result<String, StoreError> {
        let conn = self.lock()?;
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
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO tenants (id, created_at_ms) VALUES (?1, ?2)",
            params![rec.key.tenant, rec.created_at_ms as i64],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO projects (tenant_id, id, created_at_ms) VALUES (?1, ?2, ?3)",
            params![rec.key.tenant, rec.project, rec.created_at_ms as i64],
        )?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM agents WHERE tenant_id = ?1 AND name = ?2",
                params![rec.key.tenant, rec.key.name],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if exists {
            let purge: Option<i64> = tx
                .query_row(
                    "SELECT purge_at_ms FROM agents WHERE tenant_id = ?1 AND name = ?2",
                    params![rec.key.tenant, rec.key.name],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            return Err(StoreError::Exists(match purge {
                Some(_) => format!(
                    "agent {} (deleted; its data is waiting for the scheduled purge)",
                    rec.key
                ),
                None => format!("agent {}", rec.key),
            }));
        }
        let spec_json = serde_json::to_string(&rec.spec)
            .map_err(|e| StoreError::Corrupt(format!("spec does not serialize: {e}")))?;
        tx.execute(
            "INSERT INTO agents (tenant_id, name, project_id, spec_json, desired, state,
                created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                rec.key.tenant,
                rec.key.name,
                rec.project,
                spec_json,
                desired_str(rec.desired),
                rec.state.as_str(),
                rec.created_at_ms as i64
            ],
        )?;
        tx.commit()?;
        drop(conn);
        self.save_agent(rec)
    }

    /// Saves the runtime fields of an agent (desired state, state, container, restarts).
    pub fn save_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        let conn = self.lock()?;
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
        conn.execute(
            "UPDATE agents SET desired = ?3, state = ?4, message = ?5, container_id = ?6,
                image_ref = ?7, restarts = ?8, restart_times_json = ?9, last_exit_json = ?10
             WHERE tenant_id = ?1 AND name = ?2",
            params![
                rec.key.tenant,
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
        )?;
        Ok(())
    }

    /// Whether the tenant exists (it does while it has an agent, project, role or token).
    pub fn tenant_exists(&self, tenant: &str) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM tenants WHERE id = ?1",
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Deletes a tenant's own rows — role bindings, tokens, projects, then the tenant — in
    /// one transaction. Its agents must be gone first (each has its own purge).
    pub fn delete_tenant_rows(&self, tenant: &str) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        for sql in [
            "DELETE FROM role_bindings WHERE tenant_id = ?1",
            "DELETE FROM tokens WHERE tenant_id = ?1",
            "DELETE FROM projects WHERE tenant_id = ?1",
            "DELETE FROM tenants WHERE id = ?1",
        ] {
            tx.execute(sql, params![tenant])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_agent(&self, key: &AgentKey) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        let n = conn.execute(
            "DELETE FROM agents WHERE tenant_id = ?1 AND name = ?2",
            params![key.tenant, key.name],
        )?;
        Ok(n > 0)
    }

    /// Marks a deleted agent's data for purging at `at_ms` (the agent is gone already).
    pub fn schedule_purge(&self, key: &AgentKey, at_ms: u64) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            "UPDATE agents SET purge_at_ms = ?3 WHERE tenant_id = ?1 AND name = ?2",
            params![key.tenant, key.name, at_ms as i64],
        )?;
        Ok(())
    }

    /// Deleted agents whose data waits for a purge, with when it is due.
    pub fn pending_purges(&self) -> Result<Vec<(AgentKey, u64)>, StoreError> {
        let conn = self.lock()?;
        let mut st = conn.prepare(
            "SELECT tenant_id, name, purge_at_ms FROM agents WHERE purge_at_ms IS NOT NULL ORDER BY purge_at_ms",
        )?;
        let v = st
            .query_map([], |r| {
                Ok((
                    AgentKey {
                        tenant: r.get(0)?,
                        name: r.get(1)?,
                    },
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Every agent, ordered by tenant and name.
    pub fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT tenant_id, name, project_id, spec_json, desired, state, message,
                    container_id, image_ref, restarts, restart_times_json, last_exit_json,
                    created_at_ms
             FROM agents WHERE purge_at_ms IS NULL ORDER BY tenant_id, name",
        )?;
        let rows = stmt.query_map([], |r| {
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
        })?;
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
            ) = row?;
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
                        code: e.code,
                        oom_killed: e.oom_killed,
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
        Ok(out)
    }

    /// The operator registered for a uid: (name, role).
    pub fn operator_by_uid(&self, uid: u32) -> Result<Option<(String, String)>, StoreError> {
        let conn = self.lock()?;
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
mod tests {
    use super::*;

    fn rec(tenant: &str, name: &str) -> AgentRecord {
        let spec = AgentSpec::from_toml(&format!(
            "name = \"{name}\"\ntenant = \"{tenant}\"\nimage = \"agenfleet/agent\"\n"
        ))
        .unwrap();
        AgentRecord {
            key: AgentKey {
                tenant: tenant.into(),
                name: name.into(),
            },
            project: "default".into(),
            spec,
            desired: DesiredState::Running,
            state: AgentState::Pending,
            message: None,
            container_id: None,
            image_ref: None,
            restarts: 0,
            restart_times: vec![],
            last_exit: None,
            created_at_ms: 1,
        }
    }

    #[test]
    fn insert_save_load_delete_round_trip() {
        let s = Store::open_in_memory().unwrap();
        let mut a = rec("acme", "a1");
        s.insert_agent(&a).unwrap();
        assert!(matches!(s.insert_agent(&a), Err(StoreError::Exists(_))));
        // Same name in another tenant is a different agent.
        s.insert_agent(&rec("other", "a1")).unwrap();
        a.state = AgentState::Failed;
        a.container_id = Some("c1".into());
        a.restart_times = vec![5, 6];
        a.last_exit = Some(ExitInfo {
            code: 137,
            oom_killed: true,
            at_ms: 9,
        });
        s.save_agent(&a).unwrap();
        let all = s.load_agents().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], a);
        assert!(s.delete_agent(&a.key).unwrap());
        assert!(!s.delete_agent(&a.key).unwrap());
        assert_eq!(s.load_agents().unwrap().len(), 1);
    }

    #[test]
    fn a_tenant_handle_sees_its_tenant_only_and_cannot_read_around_the_views() {
        let s = Store::open_in_memory().unwrap();
        s.insert_agent(&rec("acme", "a1")).unwrap();
        s.insert_agent(&rec("beta", "b1")).unwrap();
        let acme = s.tenant("acme");
        let names: Vec<String> = acme
            .with(|c| {
                let mut st = c.prepare("SELECT name FROM t_agents ORDER BY name")?;
                let v = st.query_map([], |r| r.get(0))?.collect();
                v
            })
            .unwrap();
        assert_eq!(names, vec!["a1"]);
        // The guard: reading a tenant table directly is refused, whatever the WHERE says.
        for sql in [
            "SELECT name FROM agents",
            "SELECT name FROM agents WHERE tenant_id = 'acme'",
            "SELECT COUNT(*) FROM credentials",
            "SELECT uid FROM role_bindings",
        ] {
            let r = acme.with(|c| {
                c.query_row(sql, [], |r| {
                    r.get::<_, String>(0)
                        .or_else(|_| r.get::<_, i64>(0).map(|n| n.to_string()))
                })
            });
            assert!(r.is_err(), "`{sql}` was allowed under a tenant handle");
        }
        // Platform-wide access still works, and the mode does not leak out of the handle.
        assert_eq!(s.load_agents().unwrap().len(), 2);
        let beta: i64 = s
            .tenant("beta")
            .with(|c| c.query_row("SELECT COUNT(*) FROM t_agents", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(beta, 1);
    }

    #[test]
    fn a_tenants_rows_go_together_and_only_its_own() {
        let s = Store::open_in_memory().unwrap();
        s.insert_agent(&rec("acme", "a1")).unwrap();
        s.insert_agent(&rec("beta", "b1")).unwrap();
        assert!(s.tenant_exists("acme").unwrap());
        assert!(!s.tenant_exists("nobody").unwrap());
        s.delete_agent(&AgentKey {
            tenant: "acme".into(),
            name: "a1".into(),
        })
        .unwrap();
        s.delete_tenant_rows("acme").unwrap();
        assert!(!s.tenant_exists("acme").unwrap());
        assert!(s.tenant_exists("beta").unwrap());
        assert_eq!(s.load_agents().unwrap().len(), 1);
    }

    #[test]
    fn instance_id_is_stable() {
        let s = Store::open_in_memory().unwrap();
        let a = s.instance_id().unwrap();
        assert_eq!(a, s.instance_id().unwrap());
        assert_eq!(a.len(), 8);
    }
}
