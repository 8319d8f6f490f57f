//! The role table, one for the daemon and the console: the permissions, the roles that
//! can be bound to a tenant or a project, and which permissions each role holds. The daemon
//! decides with it (`daemon/src/authz`); the console reads the same table to say up front
//! what a caller's roles will not allow.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// See agents, their state and credential metadata.
    FleetRead,
    /// Read agents' logs.
    LogsRead,
    /// Start, stop, restart, reset agents.
    AgentControl,
    /// Create and delete agents.
    AgentCreate,
    AgentDelete,
    AuditRead,
    /// Write operator notes into the trail.
    AuditWrite,
    CredsRead,
    /// Set, rotate, revoke credentials.
    CredsWrite,
    /// Grant and revoke roles.
    Grant,
    /// Publish and roll back an agent's scopes.
    ScopesWrite,
    /// Publish and roll back a tenant's Cedar policy (held at tenant level only).
    PolicyWrite,
    /// Approve or deny an escalated tool call.
    EscalationsDecide,
    /// Acknowledge, resolve, reassign, silence and open incidents.
    IncidentsManage,
    /// Add, change and remove the tenant's providers and connections (held at tenant
    /// level only, like the tenant's policy).
    UpstreamsWrite,
    /// Read an agent's memory values (an export, audited as a reveal).
    MemoryExport,
    /// Copy values from one agent's memory into another's of the same tenant.
    MemoryHandoff,
    /// See runs (input, outcome, timeline).
    RunsRead,
    /// Start and cancel runs.
    RunsTrigger,
    /// Add, revoke and rotate the triggers (webhook subscriptions, schedules) that start
    /// runs.
    TriggersWrite,
    // Platform-wide: platform admins only.
    ImageBuild,
    VaultAdmin,
    OperatorsAdmin,
}

impl Permission {
    pub const ALL: [Permission; 23] = [
        P::FleetRead,
        P::LogsRead,
        P::AgentControl,
        P::AgentCreate,
        P::AgentDelete,
        P::AuditRead,
        P::AuditWrite,
        P::CredsRead,
        P::CredsWrite,
        P::Grant,
        P::ScopesWrite,
        P::PolicyWrite,
        P::EscalationsDecide,
        P::IncidentsManage,
        P::UpstreamsWrite,
        P::MemoryExport,
        P::MemoryHandoff,
        P::RunsRead,
        P::RunsTrigger,
        P::TriggersWrite,
        P::ImageBuild,
        P::VaultAdmin,
        P::OperatorsAdmin,
    ];

    pub fn parse(s: &str) -> Option<Permission> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::FleetRead => "fleet.read",
            Permission::LogsRead => "logs.read",
            Permission::AgentControl => "agents.control",
            Permission::AgentCreate => "agents.create",
            Permission::AgentDelete => "agents.delete",
            Permission::AuditRead => "audit.read",
            Permission::AuditWrite => "audit.write",
            Permission::CredsRead => "creds.read",
            Permission::CredsWrite => "creds.write",
            Permission::Grant => "roles.grant",
            Permission::ScopesWrite => "scopes.write",
            Permission::PolicyWrite => "policy.write",
            Permission::EscalationsDecide => "escalations.decide",
            Permission::IncidentsManage => "incidents.manage",
            Permission::UpstreamsWrite => "upstreams.write",
            Permission::MemoryExport => "memory.export",
            Permission::MemoryHandoff => "memory.handoff",
            Permission::RunsRead => "runs.read",
            Permission::RunsTrigger => "runs.trigger",
            Permission::TriggersWrite => "triggers.write",
            Permission::ImageBuild => "image.build",
            Permission::VaultAdmin => "vault.admin",
            Permission::OperatorsAdmin => "operators.admin",
        }
    }
}

/// The roles that can be bound to a tenant or a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopedRole {
    TenantAdmin,
    ProjectAdmin,
    ProjectContributor,
    ProjectViewer,
}

use Permission as P;
const VIEWER: &[Permission] = &[P::FleetRead, P::AuditRead, P::CredsRead, P::RunsRead];
const CONTRIBUTOR: &[Permission] = &[
    P::FleetRead,
    P::AuditRead,
    P::CredsRead,
    P::LogsRead,
    P::AgentControl,
    P::AuditWrite,
    P::EscalationsDecide,
    P::IncidentsManage,
    P::RunsRead,
    P::RunsTrigger,
];
const ADMIN: &[Permission] = &[
    P::FleetRead,
    P::AuditRead,
    P::CredsRead,
    P::LogsRead,
    P::AgentControl,
    P::AuditWrite,
    P::AgentCreate,
    P::AgentDelete,
    P::CredsWrite,
    P::Grant,
    P::ScopesWrite,
    P::PolicyWrite,
    P::EscalationsDecide,
    P::IncidentsManage,
    P::UpstreamsWrite,
    P::MemoryExport,
    P::MemoryHandoff,
    P::RunsRead,
    P::RunsTrigger,
    P::TriggersWrite,
];

impl ScopedRole {
    pub fn parse(s: &str) -> Option<ScopedRole> {
        Some(match s {
            "tenant_admin" => ScopedRole::TenantAdmin,
            "project_admin" => ScopedRole::ProjectAdmin,
            "project_contributor" => ScopedRole::ProjectContributor,
            "project_viewer" => ScopedRole::ProjectViewer,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ScopedRole::TenantAdmin => "tenant_admin",
            ScopedRole::ProjectAdmin => "project_admin",
            ScopedRole::ProjectContributor => "project_contributor",
            ScopedRole::ProjectViewer => "project_viewer",
        }
    }
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            ScopedRole::TenantAdmin | ScopedRole::ProjectAdmin => ADMIN,
            ScopedRole::ProjectContributor => CONTRIBUTOR,
            ScopedRole::ProjectViewer => VIEWER,
        }
    }
    /// Whether the role is bound to a project (the tenant admin is tenant-wide).
    pub fn is_project_role(self) -> bool {
        self != ScopedRole::TenantAdmin
    }
}
