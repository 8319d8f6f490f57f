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

mod schema;
pub mod tenant;

use schema::MIGRATIONS;
pub use tenant::{TenantStore, TENANT_TABLES};

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

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Set while a tenant-bound handle runs a query (see `tenant`).
    tenant_mode: Arc<std::sync::atomic::AtomicBool>,
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
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Foreign keys are off while migrations rebuild tables, checked after, then on.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tenant_mode = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let v = i as i64 + 1;
            if v > version {
                let tx = conn.unchecked_transaction()?;
                tx.execute_batch(m)?;
                let broken: Option<String> = tx
                    .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                    .optional()?;
                if let Some(table) = broken {
                    return Err(StoreError::Corrupt(format!(
                        "migration {v} leaves a row of `{table}` without its parent"
                    )));
                }
                tx.pragma_update(None, "user_version", v)?;
                tx.commit()?;
            }
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(&tenant::views_sql(&conn)?)?;
        let mode = tenant_mode.clone();
        conn.authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
            tenant::authorize(&mode, ctx)
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

    /// Whether the tenant exists (it does while it has an agent, project, role or token).
    pub fn tenant_exists(&self, tenant: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .tenant(tenant)
            .with(|c| c.query_row("SELECT COUNT(*) FROM t_tenants", [], |r| r.get(0)))?;
        Ok(n > 0)
    }

    /// Deletes a tenant's own rows — role bindings, tokens, policies, projects, then the
    /// tenant — in one transaction. Its agents must be gone first (each has its own purge).
    pub fn delete_tenant_rows(&self, tenant: &str) -> Result<(), StoreError> {
        self.tenant(tenant).with(|c| {
            let tx = c.transaction()?;
            for sql in [
                "DELETE FROM t_role_bindings",
                "DELETE FROM t_tokens",
                "DELETE FROM t_policy_versions",
                "DELETE FROM t_projects",
                "DELETE FROM t_tenants",
            ] {
                tx.execute(sql, [])?;
            }
            tx.commit()
        })
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

    fn refused_at_prepare(r: Result<(), StoreError>) -> bool {
        matches!(
            r,
            Err(StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::AuthorizationForStatementDenied
        )
    }

    fn beta_state(s: &Store) -> String {
        s.with(|c| {
            c.query_row(
                "SELECT state FROM agents WHERE tenant_id = 'beta' AND name = 'b1'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap()
    }

    #[test]
    fn a_write_aimed_at_another_tenants_row_is_refused_when_prepared() {
        let s = Store::open_in_memory().unwrap();
        s.insert_agent(&rec("acme", "a1")).unwrap();
        s.insert_agent(&rec("beta", "b1")).unwrap();
        let before = beta_state(&s);
        // Direct writes to a tenant table are refused at prepare time, under a tenant
        // handle and on the platform handle alike, whatever the WHERE says.
        for sql in [
            "UPDATE agents SET state = 'failed' WHERE tenant_id = 'beta'",
            "DELETE FROM agents WHERE tenant_id = 'beta'",
            "INSERT INTO agents (tenant_id, name, project_id, spec_json, desired, state, created_at_ms) VALUES ('beta', 'x', 'default', '{}', 'running', 'pending', 0)",
            "DELETE FROM credentials",
            "UPDATE tokens SET revoked_ms = 1",
            "DELETE FROM role_bindings WHERE tenant_id = 'beta'",
            "UPDATE policy_versions SET text = ''",
            "DELETE FROM tenants WHERE id = 'beta'",
        ] {
            let r = s.tenant("acme").with(|c| c.prepare(sql).map(|_| ()));
            assert!(refused_at_prepare(r), "`{sql}` was prepared under a tenant handle");
            let r = s.with(|c| c.prepare(sql).map(|_| ()));
            assert!(refused_at_prepare(r), "`{sql}` was prepared on the platform handle");
        }
        // Through the views a write reaches the bound tenant's rows only.
        let n = s
            .tenant("acme")
            .with(|c| {
                tenant::changes(c, |c| {
                    c.execute(
                        "UPDATE t_agents SET state = 'failed' WHERE tenant_id = 'beta'",
                        [],
                    )
                })
            })
            .unwrap();
        assert_eq!(n, 0, "beta's row is not in acme's view");
        let e = s
            .tenant("acme")
            .with(|c| {
                c.execute(
                    "INSERT INTO t_agents (tenant_id, name, project_id, spec_json, desired, state, created_at_ms) VALUES ('beta', 'x', 'default', '{}', 'running', 'pending', 0)",
                    [],
                )
            })
            .unwrap_err();
        assert!(e.to_string().contains("another tenant"), "{e}");
        let e = s
            .tenant("acme")
            .with(|c| c.execute("UPDATE t_agents SET tenant_id = 'beta'", []))
            .unwrap_err();
        assert!(e.to_string().contains("cannot move"), "{e}");
        // Outside a tenant handle the views are empty: nothing to write through.
        let n = s
            .with(|c| tenant::changes(c, |c| c.execute("DELETE FROM t_agents", [])))
            .unwrap();
        assert_eq!(n, 0);
        assert!(s
            .with(|c| c.execute(
                "INSERT INTO t_projects (id, created_at_ms) VALUES ('p', 0)",
                []
            ))
            .is_err());
        assert_eq!(beta_state(&s), before);
        assert_eq!(s.load_agents().unwrap().len(), 2);
    }

    #[test]
    fn deleting_an_agent_through_its_tenant_removes_its_children_only() {
        let s = Store::open_in_memory().unwrap();
        s.insert_agent(&rec("acme", "a1")).unwrap();
        s.insert_agent(&rec("beta", "a1")).unwrap();
        s.with(|c| {
            c.execute(
                "INSERT INTO vault_keys (id, wrapped, created_ms) VALUES (1, x'00', 0)",
                [],
            )
        })
        .unwrap();
        for t in ["acme", "beta"] {
            s.tenant(t)
                .with(|c| {
                    c.execute_batch(
                        "INSERT INTO t_credentials (agent, name, version, key_id, sealed, value_hmac, created_ms)
                            VALUES ('a1', 'k', 1, 1, x'00', 'h', 0);
                         INSERT INTO t_credential_meta (agent, name, created_ms) VALUES ('a1', 'k', 0);
                         INSERT INTO t_scope_versions (agent, version, text, hash, created_ms, author, note)
                            VALUES ('a1', 1, '', 'h', 0, 'me', '');",
                    )
                })
                .unwrap();
        }
        let key = AgentKey {
            tenant: "acme".into(),
            name: "a1".into(),
        };
        assert!(s.delete_agent(&key).unwrap());
        let count = |t: &str| -> i64 {
            s.tenant(t)
                .with(|c| {
                    c.query_row(
                        "SELECT (SELECT COUNT(*) FROM t_credentials) + (SELECT COUNT(*) FROM t_credential_meta)
                              + (SELECT COUNT(*) FROM t_scope_versions) + (SELECT COUNT(*) FROM t_agents)",
                        [],
                        |r| r.get(0),
                    )
                })
                .unwrap()
        };
        assert_eq!(count("acme"), 0);
        assert_eq!(
            count("beta"),
            4,
            "the other tenant's agent of the same name keeps all"
        );
    }

    #[test]
    fn a_database_made_before_tenant_bound_writes_is_migrated_with_its_rows() {
        let dir = std::env::temp_dir().join(format!("agf-store-mig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        let _ = std::fs::remove_file(&path);
        {
            let c = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..7] {
                c.execute_batch(m).unwrap();
            }
            c.pragma_update(None, "user_version", 7).unwrap();
            c.execute_batch(
                "INSERT INTO tenants VALUES ('acme', 0);
                 INSERT INTO projects VALUES ('acme', 'default', 0);
                 INSERT INTO agents (tenant_id, name, project_id, spec_json, desired, state, created_at_ms)
                    VALUES ('acme', 'a1', 'default', '{}', 'running', 'running', 0);
                 INSERT INTO vault_keys (id, wrapped, created_ms) VALUES (1, x'00', 0);
                 INSERT INTO credentials (tenant_id, agent, name, version, key_id, sealed, value_hmac, created_ms)
                    VALUES ('acme', 'a1', 'k', 1, 1, x'00', 'h', 0);
                 INSERT INTO policy_versions VALUES ('acme', 1, 'permit', 'h', 0, 'me', '');",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let (creds, policies, version): (i64, i64, i64) = s
            .with(|c| {
                c.query_row(
                    "SELECT (SELECT COUNT(*) FROM credentials), (SELECT COUNT(*) FROM policy_versions), (SELECT user_version FROM pragma_user_version)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .unwrap();
        assert_eq!((creds, policies, version), (1, 1, MIGRATIONS.len() as i64));
        // No cascade is left: the schema has no ON DELETE CASCADE, and the delete trigger
        // takes the children.
        let cascades: i64 = s
            .with(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE sql LIKE '%CASCADE%'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(cascades, 0);
        s.delete_agent(&AgentKey {
            tenant: "acme".into(),
            name: "a1".into(),
        })
        .unwrap();
        let left: i64 = s
            .with(|c| c.query_row("SELECT COUNT(*) FROM credentials", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(left, 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
