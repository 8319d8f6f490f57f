//! The `Fleet` service: what an operator (the console, the CLI, a script) can ask the daemon.
//! Each connection is bound to one caller (from the socket's peer credentials), so no
//! method takes an identity argument.

use crate::audit::{AuditEntry, AuditQuery, AuditStatus, Checkpoint, VerifyReport};
use crate::backup::{BackupChunk, BackupInfo};
use crate::error::ApiError;
use crate::incidents::{Incident, Matrix, OutboxRow, Party, RoutesReport};
use crate::policy::{
    EscalationView, PolicyCase, PolicyCaseResult, PolicyProblem, PolicyVersion, VersionHistory,
};
use crate::pulse::{AgentHistory, Pulse};
use crate::secret::SecretValue;
use crate::spec::{AgentSpec, ApplyOutcome, SpecHistory, SpecVersion};
use crate::types::CallerInfo;
use crate::types::{
    AgentAction, AgentRef, AgentView, FleetStatus, Hello, HostInfo, ImageInfo, LogChunk, NewToken,
    OperatorInfo, RetentionReport, RoleBinding, TenantInfo, TenantMoved, TenantSettings, TokenInfo,
    WatchReply,
};
use crate::upstream::{UpstreamClass, UpstreamSpec, UpstreamView, UsageRow};
use crate::vault::{CredentialInfo, VaultStatus};

#[tarpc::service]
pub trait Fleet {
    /// Checks protocol versions and tells the caller who the daemon thinks it is.
    async fn hello(protocol_version: u32) -> Result<Hello, ApiError>;
    /// Daemon, engine and fleet summary, with every agent the caller may see.
    async fn status() -> Result<FleetStatus, ApiError>;
    /// Versions, and (for platform admins) the daemon's config file, directories and
    /// engine address.
    async fn host_info() -> Result<HostInfo, ApiError>;
    /// The metrics in the Prometheus/OpenMetrics text format (platform-level: fleet.read
    /// on the platform; tenant names are label values).
    async fn metrics_text() -> Result<String, ApiError>;
    /// What is kept for how long and what goes when (platform-level).
    async fn retention() -> Result<RetentionReport, ApiError>;
    /// Every agent the caller may see.
    async fn list_agents() -> Result<Vec<AgentView>, ApiError>;
    /// One agent.
    async fn get_agent(agent: AgentRef) -> Result<AgentView, ApiError>;
    /// Validates and stores a spec, then starts the agent.
    async fn create_agent(spec: AgentSpec) -> Result<AgentView, ApiError>;
    /// start | stop | restart | reset.
    async fn agent_action(agent: AgentRef, action: AgentAction) -> Result<AgentView, ApiError>;
    /// Stops the agent, removes its container and its record.
    async fn delete_agent(agent: AgentRef) -> Result<(), ApiError>;
    /// Creates the agent, or puts `spec` in force as its next version if `expected_version`
    /// (the version the caller diffed against; None: whatever is in force) is still the
    /// one in force: in place, or with a new container (see `spec::IN_PLACE_FIELDS`).
    async fn agents_apply(
        spec: AgentSpec,
        expected_version: Option<u32>,
    ) -> Result<ApplyOutcome, ApiError>;
    /// One version of an agent's spec (None: the one in force).
    async fn agents_spec(agent: AgentRef, version: Option<u32>) -> Result<SpecVersion, ApiError>;
    /// Every version of an agent's spec.
    async fn agents_history(agent: AgentRef) -> Result<SpecHistory, ApiError>;
    /// Puts a copy of version `version` in force as the next version.
    async fn agents_rollback(agent: AgentRef, version: u32) -> Result<ApplyOutcome, ApiError>;
    /// Log lines with sequence number ≥ `since_seq`; waits up to `max_wait_ms` for one.
    async fn logs(agent: AgentRef, since_seq: u64, max_wait_ms: u64) -> Result<LogChunk, ApiError>;
    /// Changes after revision `since` of daemon run `epoch`; waits up to `max_wait_ms`.
    async fn watch(epoch: u64, since: u64, max_wait_ms: u64) -> Result<WatchReply, ApiError>;
    /// Builds (or with `force`, rebuilds) the agent image from the embedded shim.
    async fn build_image(force: bool) -> Result<ImageInfo, ApiError>;
    /// Builds image `tag` from a Dockerfile directory (`context`: a tar of it, at most
    /// `MAX_BUILD_CONTEXT_BYTES`) through the engine's build API; no registry is involved.
    async fn build_context_image(tag: String, context: Vec<u8>) -> Result<ImageInfo, ApiError>;
    /// The audit log's health: writable, head, last checkpoint, signing key.
    async fn audit_status() -> Result<AuditStatus, ApiError>;
    /// Audit records matching `query`; with `max_wait_ms`, waits for the first new one.
    async fn audit_query(query: AuditQuery, max_wait_ms: u64) -> Result<Vec<AuditEntry>, ApiError>;
    /// Verifies checksums, chain and checkpoints now; `checkpoint` is one the caller kept.
    async fn audit_verify(checkpoint: Option<Checkpoint>) -> Result<VerifyReport, ApiError>;
    /// Writes an operator's note into the audit trail; answers its sequence number.
    async fn audit_note(text: String) -> Result<u64, ApiError>;
    /// Sealed, unsealed or uninitialised; keys and credentials counted.
    async fn vault_status() -> Result<VaultStatus, ApiError>;
    /// Creates the master key (into the OS keyring); answers the recovery key, once.
    async fn vault_init() -> Result<SecretValue, ApiError>;
    /// Seals the vault now: the master key leaves memory and the OS keyring (running agents
    /// keep what they hold; nothing new is delivered until `unseal`).
    async fn vault_seal() -> Result<VaultStatus, ApiError>;
    /// Opens a sealed vault with the recovery key.
    async fn vault_unseal(recovery_key: SecretValue) -> Result<VaultStatus, ApiError>;
    /// Replaces the master key (rewraps data keys); answers the new recovery key, once.
    async fn vault_rekey() -> Result<SecretValue, ApiError>;
    /// Adds a data key for new writes; answers its id.
    async fn vault_rotate_key() -> Result<u64, ApiError>;
    /// Stores a new credential for an agent (version 1).
    async fn creds_set(
        agent: AgentRef,
        name: String,
        value: SecretValue,
    ) -> Result<CredentialInfo, ApiError>;
    /// Stores the next version; older ones are revoked after `grace_secs` (0: at once); the
    /// running agent gets the new value.
    async fn creds_rotate(
        agent: AgentRef,
        name: String,
        value: SecretValue,
        grace_secs: u64,
    ) -> Result<CredentialInfo, ApiError>;
    /// Revokes one version (or every usable one) at once.
    async fn creds_revoke(
        agent: AgentRef,
        name: String,
        version: Option<u32>,
    ) -> Result<CredentialInfo, ApiError>;
    /// Metadata of an agent's credentials (never values).
    async fn creds_list(agent: AgentRef) -> Result<Vec<CredentialInfo>, ApiError>;
    /// Operators and their roles (what the caller may see of them).
    async fn operators_list() -> Result<Vec<OperatorInfo>, ApiError>;
    /// Registers a uid as an operator (platform admins only).
    async fn operators_add(
        uid: u32,
        name: String,
        platform_admin: bool,
    ) -> Result<OperatorInfo, ApiError>;
    /// Removes an operator and every role it holds (platform admins only).
    async fn operators_remove(uid: u32) -> Result<(), ApiError>;
    /// Grants a role; nobody grants more than they hold.
    async fn roles_grant(uid: u32, binding: RoleBinding) -> Result<OperatorInfo, ApiError>;
    /// Revokes a role.
    async fn roles_revoke(uid: u32, binding: RoleBinding) -> Result<OperatorInfo, ApiError>;
    /// Deletes a tenant: purges every agent of it (containers, credentials, records), then
    /// its projects, role bindings and tokens (platform admins only). Answers how many
    /// agents were purged.
    async fn tenants_delete(tenant: String) -> Result<u32, ApiError>;
    /// Binds this connection to a personal access token: from now on it acts with the
    /// token's scope and permissions (checked again on every call).
    async fn authenticate(token: SecretValue) -> Result<CallerInfo, ApiError>;
    /// Creates a token scoped to a tenant or project, with some of the creator's
    /// permissions, expiring after `ttl_secs`; the secret is answered once.
    async fn tokens_create(
        name: String,
        tenant: String,
        project: Option<String>,
        permissions: Vec<String>,
        ttl_secs: u64,
    ) -> Result<NewToken, ApiError>;
    /// Tokens the caller created (all of them for platform admins).
    async fn tokens_list() -> Result<Vec<TokenInfo>, ApiError>;
    /// Revokes a token at once, also on connections already using it.
    async fn tokens_revoke(id: String) -> Result<TokenInfo, ApiError>;
    /// Every published version of an agent's scopes; the latest is in force.
    async fn scopes_show(agent: AgentRef) -> Result<VersionHistory, ApiError>;
    /// Validates scopes (TOML) and publishes them as the agent's next version.
    async fn scopes_publish(
        agent: AgentRef,
        text: String,
        note: String,
    ) -> Result<PolicyVersion, ApiError>;
    /// Publishes a copy of an earlier version of an agent's scopes.
    async fn scopes_rollback(agent: AgentRef, version: u32) -> Result<PolicyVersion, ApiError>;
    /// Every published version of a tenant's Cedar policy; the latest is in force.
    async fn policy_show(tenant: String) -> Result<VersionHistory, ApiError>;
    /// Validates a Cedar policy against the schema and publishes it as the tenant's next
    /// version.
    async fn policy_publish(
        tenant: String,
        text: String,
        note: String,
    ) -> Result<PolicyVersion, ApiError>;
    /// Publishes a copy of an earlier version of a tenant's policy.
    async fn policy_rollback(tenant: String, version: u32) -> Result<PolicyVersion, ApiError>;
    /// The problems of a policy text against the schema (empty: valid). Stores nothing.
    async fn policy_validate(text: String) -> Result<Vec<PolicyProblem>, ApiError>;
    /// Decides each case against the agents' scopes and the tenant's policy in force, or
    /// `candidate` instead. Stores nothing.
    async fn policy_test(
        tenant: String,
        candidate: Option<String>,
        cases: Vec<PolicyCase>,
    ) -> Result<Vec<PolicyCaseResult>, ApiError>;
    /// Escalated tool calls waiting for a person (with `all`, the recently decided too).
    async fn escalations_list(all: bool) -> Result<Vec<EscalationView>, ApiError>;
    /// Approves or denies one escalated call. `request_hash` must be the escalated
    /// request's: an approval is bound to that exact request.
    async fn escalation_decide(
        id: u64,
        request_hash: String,
        approve: bool,
        reason: String,
    ) -> Result<EscalationView, ApiError>;
    /// Incidents the caller may see, newest first (with `all`, the resolved ones kept too).
    async fn incidents_list(all: bool) -> Result<Vec<Incident>, ApiError>;
    async fn incident_show(id: u64) -> Result<Incident, ApiError>;
    /// triggered → acknowledged (stops its escalation steps).
    async fn incident_ack(id: u64, note: String) -> Result<Incident, ApiError>;
    async fn incident_resolve(id: u64, note: String) -> Result<Incident, ApiError>;
    /// Hands the incident to another party (the reason is recorded).
    async fn incident_reassign(id: u64, party: Party, reason: String)
        -> Result<Incident, ApiError>;
    /// New signals of this incident are counted but not delivered for `secs`.
    async fn incident_silence(id: u64, secs: u64) -> Result<Incident, ApiError>;
    /// Opens an incident by hand for a scenario of the matrix (e.g. `api-key-leaked`).
    async fn incident_open(
        scenario: String,
        agent: Option<AgentRef>,
        summary: String,
    ) -> Result<Incident, ApiError>;
    /// The responsibility matrix and the scenarios in force.
    async fn incidents_matrix() -> Result<Matrix, ApiError>;
    /// The incident routes and where each (party, tenant)'s incidents go (and each
    /// tenant's escalations, party `reviewers`), as far as the caller sees.
    async fn incidents_routes() -> Result<RoutesReport, ApiError>;
    /// Notifications waiting in the delivery outbox or given up, newest first.
    async fn incidents_outbox(limit: u32) -> Result<Vec<OutboxRow>, ApiError>;
    /// Adds (`create`: the name must be new, `key` is required) or changes a provider or
    /// connection of a tenant (`key`: a new key; None keeps the one it has). A new version
    /// each time, audited with the key's HMAC, never the key.
    async fn upstreams_put(
        spec: UpstreamSpec,
        key: Option<SecretValue>,
        create: bool,
        note: String,
    ) -> Result<UpstreamView, ApiError>;
    /// The providers and connections in force in the tenants the caller sees (`tenant`:
    /// only that one).
    async fn upstreams_list(tenant: Option<String>) -> Result<Vec<UpstreamView>, ApiError>;
    /// Every version of one, oldest first (the last one in force unless removed).
    async fn upstreams_history(
        class: UpstreamClass,
        tenant: String,
        name: String,
    ) -> Result<Vec<UpstreamView>, ApiError>;
    /// Removes one: agents that name it can no longer reach it (recorded as a version).
    async fn upstreams_remove(
        class: UpstreamClass,
        tenant: String,
        name: String,
    ) -> Result<UpstreamView, ApiError>;
    /// Model usage of the agents the caller sees and of their tenants (`tenant`: only
    /// that one), for the last hour, day and 30 days.
    async fn usage(tenant: Option<String>) -> Result<Vec<UsageRow>, ApiError>;
    /// Prepares a backup of the whole host's state (platform admins: vault.admin on the
    /// platform): a database snapshot and the audit log up to a checkpoint signed for it.
    /// With `tenant`: that dedicated tenant alone (its file and the vault's wrapped keys its
    /// rows need), to restore into a fresh daemon.
    async fn backup_create(tenant: Option<String>) -> Result<BackupInfo, ApiError>;
    /// The archive's bytes from `offset` (the next byte not yet read), at most `max`.
    async fn backup_read(id: String, offset: u64, max: u32) -> Result<BackupChunk, ApiError>;
    /// Sets a tenant's own settings (platform admins: operators.admin on the platform).
    async fn tenants_set(
        tenant: String,
        audit_retention_days: Option<f64>,
    ) -> Result<TenantSettings, ApiError>;
    /// The tenants the caller sees, with their tier (platform admins: every tenant).
    async fn tenants_list() -> Result<Vec<TenantInfo>, ApiError>;
    /// Creates an empty tenant in `tier` (`standard` or `dedicated`; platform admins).
    async fn tenants_create(tenant: String, tier: String) -> Result<TenantInfo, ApiError>;
    /// Moves a tenant's rows to `tier`: copied, every table's rows and digest checked on
    /// both sides, then switched in one step (platform admins; audited).
    async fn tenants_move(tenant: String, tier: String) -> Result<TenantMoved, ApiError>;
    /// The fleet the caller sees over the last ten minutes (see `pulse`); waits up to
    /// `max_wait_ms` for a bucket newer than the one starting at `after_ms` to close.
    async fn pulse(after_ms: u64, max_wait_ms: u64) -> Result<Pulse, ApiError>;
    /// One agent's CPU and memory over the last ten minutes; waits like `pulse`.
    async fn agent_history(
        agent: AgentRef,
        after_ms: u64,
        max_wait_ms: u64,
    ) -> Result<AgentHistory, ApiError>;
    /// The long operations in progress and the revision of that list; waits up to
    /// `max_wait_ms` for a revision after `since`.
    async fn operations(
        since: u64,
        max_wait_ms: u64,
    ) -> Result<(u64, Vec<crate::types::Operation>), ApiError>;
    /// How much an agent's memory holds (never a value).
    async fn memory_stats(agent: AgentRef) -> Result<crate::memory::MemoryStats, ApiError>;
    /// An agent's memory's values, decrypted, a page at a time in key order after
    /// `after` ("" for the first page; memory.export; each page audited as a reveal
    /// before it is answered).
    async fn memory_export(
        agent: AgentRef,
        after: String,
    ) -> Result<crate::memory::MemoryExportPage, ApiError>;
    /// Copies the values whose keys start with `prefix` from one agent's memory into
    /// another's of the same tenant (memory.handoff on both; audited with the reason).
    async fn memory_handoff(
        from: AgentRef,
        to: AgentRef,
        prefix: String,
        reason: String,
    ) -> Result<crate::memory::Handoff, ApiError>;
    /// Queues a run of `agent` with `input_json` (JSON text, at most `MAX_RUN_INPUT`).
    async fn runs_start(
        agent: AgentRef,
        input_json: String,
    ) -> Result<crate::runs::RunView, ApiError>;
    /// Runs the caller may see, newest first.
    async fn runs_list(query: crate::runs::RunQuery)
        -> Result<Vec<crate::runs::RunView>, ApiError>;
    /// One run; with `wait_ms`, answered once it has ended or the wait is over.
    async fn runs_get(id: u64, wait_ms: u64) -> Result<crate::runs::RunView, ApiError>;
    /// Cancels a queued or running run.
    async fn runs_cancel(id: u64) -> Result<crate::runs::RunView, ApiError>;
    /// A run's story from the audit log, oldest first: its start, each tool decision and
    /// model or connection call its agent made while working on it, its end.
    async fn runs_timeline(id: u64) -> Result<Vec<crate::AuditEntry>, ApiError>;
    /// A run's output: a job's (kept with the run, redacted; live while it runs), or the
    /// lines a service agent printed while the run ran.
    async fn runs_logs(id: u64) -> Result<crate::LogChunk, ApiError>;
    /// Adds a trigger to `agent`: a webhook subscription (its token and secret answered
    /// once) or a schedule.
    async fn triggers_add(
        agent: AgentRef,
        new: crate::triggers::TriggerNew,
    ) -> Result<crate::triggers::TriggerCreated, ApiError>;
    /// Triggers the caller may see (of `agent`, or all), revoked ones included.
    async fn triggers_list(
        agent: Option<AgentRef>,
    ) -> Result<Vec<crate::triggers::TriggerView>, ApiError>;
    /// One trigger.
    async fn triggers_get(id: String) -> Result<crate::triggers::TriggerView, ApiError>;
    /// Revokes a trigger at once: its token and secret stop working, its schedule stops.
    async fn triggers_revoke(id: String) -> Result<crate::triggers::TriggerView, ApiError>;
    /// A new signing secret for a webhook (answered once); the one before still verifies
    /// for `overlap_secs`.
    async fn triggers_rotate_secret(
        id: String,
        overlap_secs: u64,
    ) -> Result<crate::triggers::TriggerCreated, ApiError>;
}
