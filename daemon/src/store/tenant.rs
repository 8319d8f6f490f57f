//! Row-level tenant isolation, enforced by the database for reads and writes alike.
//!
//! Every table that holds a tenant's rows has a view `t_<table>` showing the rows of the
//! tenant bound to the connection (the SQL function `agf_tenant()`) and nothing else, with INSTEAD OF triggers that write the
//! table underneath: an INSERT takes the bound tenant (a row naming another is refused),
//! an UPDATE cannot move a row to another tenant, a DELETE removes the row's children
//! first. SQLite's authorizer then holds two rules at *prepare* time:
//!
//! - a tenant table is written only from inside those triggers — a direct INSERT, UPDATE
//!   or DELETE on it is refused whatever its WHERE says, on every handle;
//! - under a tenant-bound handle (`TenantStore`), a tenant table is read only through the
//!   views (or from inside the triggers).
//!
//! So a write can only reach the bound tenant's rows, and the bound tenant is set in one
//! place (`TenantStore::with`) and cleared after it: outside a tenant handle the views are
//! empty and every write through them fails. Binding costs no statement: the tenant is
//! held in memory beside the connection and read by the function. Platform-wide reads (loading all agents at
//! start, the tenant list) use `Store::with`.
//!
//! Why views and triggers rather than a check per statement: the authorizer sees tables
//! and columns, never the values a statement binds, so it cannot tell a write to the own
//! tenant from one to another; a view can, because it only ever yields the own rows.

use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;
use std::sync::{Arc, Mutex, MutexGuard};

/// The tenant bound to the connection while a `TenantStore` runs (None: platform-wide),
/// and two facts about the connection the authorizer needs.
#[derive(Default)]
pub struct Bound {
    tenant: Mutex<Option<Arc<str>>>,
    /// A dedicated tenant's own file: the platform's tables in it stay empty (see `tiers`).
    pub(super) dedicated: bool,
    /// Set only while `tiers` moves a tenant's rows between files, under the store's
    /// exclusive lock: rows are copied and removed whole, not through the views.
    pub(super) moving: std::sync::atomic::AtomicBool,
}

impl Bound {
    fn get(&self) -> MutexGuard<'_, Option<Arc<str>>> {
        self.tenant.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn for_file(dedicated: bool) -> Bound {
        Bound {
            dedicated,
            ..Bound::default()
        }
    }

    fn is_bound(&self) -> bool {
        self.get().is_some()
    }
}

/// Registers `agf_tenant()`: the bound tenant, or NULL outside a tenant handle.
pub fn register(conn: &Connection, bound: Arc<Bound>) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "agf_tenant",
        0,
        // Deterministic within a statement: the binding never changes while one runs.
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |_| Ok(bound.get().as_deref().map(str::to_string)),
    )
}

/// A table holding one tenant's rows: its tenant column, and for deletions the children
/// (table, [(child column, parent column)]) removed with a row.
pub struct TenantTable {
    pub name: &'static str,
    pub tenant_column: &'static str,
    pub children: &'static [(&'static str, &'static [(&'static str, &'static str)])],
}

const AGENT_CHILD: &[(&str, &str)] = &[("tenant_id", "tenant_id"), ("agent", "name")];

/// The tables of tenants' data. A new one is added here, and gets its view and triggers.
pub const TENANT_TABLES: &[TenantTable] = &[
    TenantTable {
        name: "tenants",
        tenant_column: "id",
        children: &[],
    },
    TenantTable {
        name: "projects",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "agents",
        tenant_column: "tenant_id",
        children: &[
            ("credentials", AGENT_CHILD),
            ("credential_meta", AGENT_CHILD),
            ("scope_versions", AGENT_CHILD),
            ("spec_versions", AGENT_CHILD),
            ("runs", AGENT_CHILD),
            ("triggers", AGENT_CHILD),
        ],
    },
    TenantTable {
        name: "credentials",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "credential_meta",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "role_bindings",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "tokens",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "scope_versions",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "policy_versions",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "upstreams",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "spec_versions",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "usage_snapshots",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "runs",
        tenant_column: "tenant_id",
        children: &[],
    },
    TenantTable {
        name: "triggers",
        tenant_column: "tenant_id",
        children: &[],
    },
];

fn is_tenant_table(name: &str) -> bool {
    TENANT_TABLES.iter().any(|t| t.name == name)
}

/// The platform's own tables: never read or written in a dedicated tenant's file, where
/// they exist (one schema for every file) but stay empty.
const PLATFORM_TABLES: &[&str] = &[
    "operators",
    "vault_meta",
    "vault_keys",
    "outbox",
    "tenant_purges",
    "tenant_tiers",
];

const BOUND: &str = "agf_tenant()";

/// The views and triggers, made from each table's columns as the schema has them now.
pub fn views_sql(conn: &Connection) -> rusqlite::Result<String> {
    let mut sql = String::new();
    for t in TENANT_TABLES {
        // (name, default, primary-key position)
        let cols: Vec<(String, Option<String>, i64)> = {
            let mut st = conn.prepare(&format!("PRAGMA main.table_info({})", t.name))?;
            let rows = st.query_map([], |r| Ok((r.get(1)?, r.get(4)?, r.get(5)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let (name, tc) = (t.name, t.tenant_column);
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        let values: Vec<String> = cols
            .iter()
            .map(|(c, default, _)| match (c == tc, default) {
                (true, _) => format!("COALESCE(NEW.{c}, {BOUND})"),
                (false, Some(d)) => format!("COALESCE(NEW.{c}, {d})"),
                (false, None) => format!("NEW.{c}"),
            })
            .collect();
        let mut pk: Vec<&(String, Option<String>, i64)> = cols.iter().filter(|c| c.2 > 0).collect();
        pk.sort_by_key(|c| c.2);
        let old_row: Vec<String> = pk.iter().map(|c| format!("{0} IS OLD.{0}", c.0)).collect();
        let old_row = old_row.join(" AND ");
        let set: Vec<String> = names.iter().map(|c| format!("{c} = NEW.{c}")).collect();
        let children: String = t
            .children
            .iter()
            .map(|(child, on)| {
                let on: Vec<String> = on
                    .iter()
                    .map(|(cc, pc)| format!("{cc} IS OLD.{pc}"))
                    .collect();
                format!("  DELETE FROM {child} WHERE {};\n", on.join(" AND "))
            })
            .collect();
        sql.push_str(&format!(
            "CREATE TEMP VIEW IF NOT EXISTS t_{name} AS
  SELECT * FROM main.{name} WHERE {tc} = {BOUND};
CREATE TEMP TRIGGER IF NOT EXISTS t_{name}_insert INSTEAD OF INSERT ON t_{name} BEGIN
  SELECT RAISE(ABORT, '{name}: a row of another tenant than the bound one')
    WHERE NEW.{tc} IS NOT NULL AND NEW.{tc} IS NOT {BOUND};
  INSERT INTO {name} ({cols}) VALUES ({values});
END;
CREATE TEMP TRIGGER IF NOT EXISTS t_{name}_update INSTEAD OF UPDATE ON t_{name} BEGIN
  SELECT RAISE(ABORT, '{name}: a row cannot move to another tenant')
    WHERE NEW.{tc} IS NOT OLD.{tc};
  UPDATE {name} SET {set} WHERE {old_row};
END;
CREATE TEMP TRIGGER IF NOT EXISTS t_{name}_delete INSTEAD OF DELETE ON t_{name} BEGIN
{children}  DELETE FROM {name} WHERE {old_row};
END;
",
            cols = names.join(", "),
            values = values.join(", "),
            set = set.join(", "),
        ));
    }
    Ok(sql)
}

/// The authorizer's rules (see the module's header).
pub fn authorize(bound: &Bound, ctx: AuthContext<'_>) -> Authorization {
    let ours = ctx.accessor.is_some_and(|a| a.starts_with("t_"));
    if bound.moving.load(std::sync::atomic::Ordering::Acquire) {
        return Authorization::Allow;
    }
    match ctx.action {
        // In a dedicated tenant's file the platform's tables are empty: reading one
        // would be a statement meant for the shared file, so it is refused too.
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Read { table_name, .. }
            if bound.dedicated && PLATFORM_TABLES.contains(&table_name) =>
        {
            Authorization::Deny
        }
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. }
            if is_tenant_table(table_name) && !ours =>
        {
            Authorization::Deny
        }
        AuthAction::Read { table_name, .. }
            if is_tenant_table(table_name) && !ours && bound.is_bound() =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

/// A handle bound to one tenant: its statements see and write that tenant's rows only
/// (through the `t_*` views); anything else is refused by the database. A dedicated
/// tenant's handle works on that tenant's own file (see `tiers`), a standard one's on
/// the shared file.
pub struct TenantStore<'a> {
    pub(super) store: &'a super::Store,
    pub(super) tenant: String,
}

impl TenantStore<'_> {
    /// Runs `f` with the tenant bound; the binding is cleared when `f` returns.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, super::StoreError> {
        let tiers = self.store.tiers()?;
        let file = tiers.file_of(Some(&self.tenant), &self.store.shared);
        let mut conn = file.lock()?;
        // Cleared however `f` ends (an error, a panic).
        struct Unbind<'m>(&'m Bound);
        impl Drop for Unbind<'_> {
            fn drop(&mut self) {
                *self.0.get() = None;
            }
        }
        *file.bound.get() = Some(Arc::from(self.tenant.as_str()));
        let unbind = Unbind(&file.bound);
        let out = f(&mut conn);
        drop(unbind);
        Ok(out?)
    }
}

/// Rows a write changed, counting those its triggers changed (a write through a view
/// reports none of its own).
pub fn changes(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<usize>,
) -> rusqlite::Result<u64> {
    let before = conn.total_changes();
    f(conn)?;
    Ok(conn.total_changes().saturating_sub(before))
}
