//! `agenfleet whoami`, `agenfleet operators list|add|remove`, `agenfleet tenants
//! list|create|move|set|delete` and
//! `agenfleet roles grant|revoke UID ROLE TENANT[/PROJECT]`.

use super::Out;
use crate::client::{CliError, Conn};
use agenfleet_protocol::{OperatorInfo, RoleBinding, TenantInfo};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum OperatorsCmd {
    /// Operators and their roles (what you may see of them).
    List,
    /// Register a uid as an operator (platform admins only).
    Add {
        uid: u32,
        name: String,
        #[arg(long)]
        platform_admin: bool,
    },
    /// Remove an operator and every role it holds.
    Remove { uid: u32 },
}

#[derive(Subcommand, Debug)]
pub enum TenantsCmd {
    /// Tenants you can see, with their isolation tier and agents.
    List,
    /// Create an empty tenant. `--tier dedicated` gives it a database file of its own
    /// (`<state>/tenants/<tenant>.db`); `standard` keeps its rows in the shared one.
    Create {
        tenant: String,
        #[arg(long, default_value = "standard", value_name = "standard|dedicated")]
        tier: String,
    },
    /// Move a tenant's rows to another tier: copied, every table's rows and SHA-256
    /// checked on both sides, then switched in one step. Everything else waits meanwhile.
    Move {
        tenant: String,
        #[arg(long, value_name = "standard|dedicated")]
        tier: String,
    },
    /// Delete a tenant: every agent purged (containers, credentials, records), then its
    /// projects, roles and tokens. Needs --yes.
    Delete {
        tenant: String,
        #[arg(long)]
        yes: bool,
    },
    /// Set a tenant's own settings.
    Set {
        tenant: String,
        /// Days its audit records are kept: a number (0: for ever), or `default` for the
        /// platform's `audit_retention_days`. A segment goes only when every record in it
        /// is past its own retention.
        #[arg(long, value_name = "DAYS|default")]
        audit_retention_days: String,
    },
}

fn tenant_line(t: &TenantInfo) -> String {
    let retention = match t.audit_retention_days {
        None => "platform's".to_string(),
        Some(0.0) => "for ever".to_string(),
        Some(d) => format!("{d} days"),
    };
    format!(
        "{:<24} {:<10} {:>6}  {:<16} {}",
        t.tenant,
        t.tier,
        t.agents,
        retention,
        t.file.as_deref().unwrap_or("(shared)")
    )
}

pub async fn run_tenants(conn: &Conn, out: &Out, cmd: &TenantsCmd) -> Result<(), CliError> {
    let (tenant, yes) = match cmd {
        TenantsCmd::List => {
            let list = conn.client.tenants_list(conn.ctx()).await??;
            return out.print(&list, || {
                let mut s = format!(
                    "{:<24} {:<10} {:>6}  {:<16} {}",
                    "TENANT", "TIER", "AGENTS", "AUDIT KEPT", "DATABASE"
                );
                for t in &list {
                    s.push('\n');
                    s.push_str(&tenant_line(t));
                }
                s
            });
        }
        TenantsCmd::Create { tenant, tier } => {
            let t = conn
                .client
                .tenants_create(conn.ctx(), tenant.clone(), tier.clone())
                .await??;
            return out.print(&t, || match &t.file {
                Some(f) => format!("created tenant {} ({} tier, {f})", t.tenant, t.tier),
                None => format!("created tenant {} ({} tier)", t.tenant, t.tier),
            });
        }
        TenantsCmd::Move { tenant, tier } => {
            let m = conn
                .client
                .tenants_move(
                    conn.ctx_wait(std::time::Duration::from_secs(600)),
                    tenant.clone(),
                    tier.clone(),
                )
                .await??;
            return out.print(&m, || {
                let rows: u64 = m.tables.iter().map(|t| t.rows).sum();
                let mut s = format!(
                    "moved tenant {} from {} to {}: {rows} rows in {} tables, each checked (rows and SHA-256); the store was held {} ms",
                    m.tenant,
                    m.from,
                    m.to,
                    m.tables.len(),
                    m.held_ms
                );
                for t in m.tables.iter().filter(|t| t.rows > 0) {
                    s.push_str(&format!("\n  {:<18} {:>8}  {}", t.table, t.rows, &t.sha256[..16]));
                }
                s
            });
        }
        TenantsCmd::Delete { tenant, yes } => (tenant, yes),
        TenantsCmd::Set {
            tenant,
            audit_retention_days,
        } => {
            let days =
                match audit_retention_days.as_str() {
                    "default" => None,
                    d => Some(d.parse::<f64>().ok().filter(|d| d.is_finite()).ok_or_else(
                        || {
                            CliError::new(
                        6,
                        "invalid_argument",
                        format!("--audit-retention-days {d}: give a number of days or `default`"),
                    )
                        },
                    )?),
                };
            let set = conn
                .client
                .tenants_set(conn.ctx(), tenant.clone(), days)
                .await??;
            return out.print(&set, || match set.audit_retention_days {
                None => format!("tenant {tenant}: audit records kept as the platform's"),
                Some(0.0) => format!("tenant {tenant}: audit records kept for ever"),
                Some(d) => format!("tenant {tenant}: audit records kept {d} days"),
            });
        }
    };
    if !yes {
        return Err(CliError::new(
            6,
            "invalid_argument",
            format!("deleting tenant {tenant} purges every agent and credential in it: add --yes"),
        ));
    }
    let n = conn
        .client
        .tenants_delete(
            conn.ctx_wait(std::time::Duration::from_secs(300)),
            tenant.clone(),
        )
        .await??;
    out.print(
        &serde_json::json!({ "deleted": tenant, "agents_purged": n }),
        || format!("deleted tenant {tenant}; {n} agent(s) purged"),
    )
}

#[derive(Subcommand, Debug)]
pub enum RolesCmd {
    /// Grant ROLE (tenant_admin, project_admin, project_contributor, project_viewer) at
    /// TENANT (tenant_admin) or TENANT/PROJECT (project roles).
    Grant {
        uid: u32,
        role: String,
        scope: String,
    },
    /// Revoke a role.
    Revoke {
        uid: u32,
        role: String,
        scope: String,
    },
}

fn binding(role: &str, scope: &str) -> Result<RoleBinding, CliError> {
    let (tenant, project) = match scope.split_once('/') {
        Some((t, p)) => (t.to_string(), Some(p.to_string())),
        None => (scope.to_string(), None),
    };
    if tenant.is_empty() || project.as_deref() == Some("") {
        return Err(CliError::new(
            6,
            "invalid_argument",
            format!("bad scope `{scope}`: write TENANT or TENANT/PROJECT"),
        ));
    }
    Ok(RoleBinding {
        role: role.to_string(),
        tenant,
        project,
    })
}

fn describe(o: &OperatorInfo) -> String {
    let roles: Vec<String> = o.bindings.iter().map(|b| b.to_string()).collect();
    format!(
        "{:<8} {:<16} {}{}",
        o.uid,
        o.name,
        if o.platform_admin {
            "platform admin "
        } else {
            ""
        },
        if roles.is_empty() {
            String::new()
        } else {
            roles.join(", ")
        }
    )
}

pub async fn whoami(
    conn: &Conn,
    out: &Out,
    caller: &agenfleet_protocol::CallerInfo,
) -> Result<(), CliError> {
    let _ = conn;
    out.print(caller, || {
        let roles: Vec<String> = caller.bindings.iter().map(|b| b.to_string()).collect();
        format!(
            "{} (uid {}): {}{}",
            caller.operator,
            caller.uid,
            caller.role,
            if roles.is_empty() {
                String::new()
            } else {
                format!("; {}", roles.join(", "))
            }
        )
    })
}

pub async fn run_operators(conn: &Conn, out: &Out, cmd: &OperatorsCmd) -> Result<(), CliError> {
    match cmd {
        OperatorsCmd::List => {
            let list = conn.client.operators_list(conn.ctx()).await??;
            out.print(&list, || {
                list.iter().map(describe).collect::<Vec<_>>().join("\n")
            })
        }
        OperatorsCmd::Add {
            uid,
            name,
            platform_admin,
        } => {
            let o = conn
                .client
                .operators_add(conn.ctx(), *uid, name.clone(), *platform_admin)
                .await??;
            out.print(&o, || format!("added {}", describe(&o)))
        }
        OperatorsCmd::Remove { uid } => {
            conn.client.operators_remove(conn.ctx(), *uid).await??;
            out.print(&serde_json::json!({ "removed": uid }), || {
                format!("removed uid {uid}")
            })
        }
    }
}

pub async fn run_roles(conn: &Conn, out: &Out, cmd: &RolesCmd) -> Result<(), CliError> {
    let (uid, b, grant) = match cmd {
        RolesCmd::Grant { uid, role, scope } => (*uid, binding(role, scope)?, true),
        RolesCmd::Revoke { uid, role, scope } => (*uid, binding(role, scope)?, false),
    };
    let o = if grant {
        conn.client.roles_grant(conn.ctx(), uid, b).await??
    } else {
        conn.client.roles_revoke(conn.ctx(), uid, b).await??
    };
    out.print(&o, || describe(&o))
}
