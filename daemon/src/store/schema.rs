//! The database's schema: the migrations, applied in order, each once (`user_version`
//! counts them). A migration never changes after it shipped; a change is a new one.

pub const MIGRATIONS: &[&str] = &[
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
    // 8: tenant tables are written only through the tenant-bound views (see tenant.rs),
    // whose delete triggers remove a row's children themselves: the foreign keys stay, but
    // without ON DELETE CASCADE (a cascade would write a tenant table from outside them).
    "CREATE TABLE credentials_new (
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
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name));
     INSERT INTO credentials_new SELECT * FROM credentials;
     DROP TABLE credentials;
     ALTER TABLE credentials_new RENAME TO credentials;
     CREATE TABLE credential_meta_new (
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        name TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_rotated_ms INTEGER,
        last_delivered_ms INTEGER,
        PRIMARY KEY (tenant_id, agent, name),
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name));
     INSERT INTO credential_meta_new SELECT * FROM credential_meta;
     DROP TABLE credential_meta;
     ALTER TABLE credential_meta_new RENAME TO credential_meta;
     CREATE TABLE role_bindings_new (
        uid INTEGER NOT NULL REFERENCES operators(uid),
        role TEXT NOT NULL,
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        project_id TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (uid, role, tenant_id, project_id));
     INSERT INTO role_bindings_new SELECT * FROM role_bindings;
     DROP TABLE role_bindings;
     ALTER TABLE role_bindings_new RENAME TO role_bindings;
     CREATE TABLE scope_versions_new (
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        version INTEGER NOT NULL,
        text TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (tenant_id, agent, version),
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name));
     INSERT INTO scope_versions_new SELECT * FROM scope_versions;
     DROP TABLE scope_versions;
     ALTER TABLE scope_versions_new RENAME TO scope_versions;
     CREATE TABLE policy_versions_new (
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        version INTEGER NOT NULL,
        text TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (tenant_id, version));
     INSERT INTO policy_versions_new SELECT * FROM policy_versions;
     DROP TABLE policy_versions;
     ALTER TABLE policy_versions_new RENAME TO policy_versions;",
    // 9: providers and connections of a tenant, one row per version (the latest is in
    // force unless it is a removal). The key is sealed by the vault with associated data
    // binding it to tenant, name and key version; a change that keeps the key copies it.
    "CREATE TABLE upstreams (
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        class TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        key_version INTEGER NOT NULL,
        key_id INTEGER NOT NULL REFERENCES vault_keys(id),
        sealed BLOB NOT NULL,
        value_hmac TEXT NOT NULL,
        removed INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (tenant_id, name, version));",
    // 10: each tenant's usage meters as of an audit sequence number (the model.call
    // records after it are replayed at start).
    "CREATE TABLE usage_snapshots (
        tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
        seq INTEGER NOT NULL,
        body_json TEXT NOT NULL,
        saved_ms INTEGER NOT NULL);",
    // 11: the delivery outbox (incidents' and escalations' notifications): a row before
    // the first attempt, deleted once delivered, kept as `failed` when given up.
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        route TEXT NOT NULL,
        kind TEXT NOT NULL,
        ref_id INTEGER NOT NULL,
        event TEXT NOT NULL,
        tenant_id TEXT,
        body BLOB NOT NULL,
        env_json TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        state TEXT NOT NULL,
        last_error TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL);
     CREATE INDEX outbox_state ON outbox(state, id);",
    // 12: escalations (tool calls waiting for a person, and how each ended): pending ones
    // and live approvals survive a daemon restart.
    "CREATE TABLE escalations (
        id INTEGER PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        state TEXT NOT NULL,
        body_json TEXT NOT NULL,
        updated_ms INTEGER NOT NULL);
     CREATE INDEX escalations_state ON escalations(state, id);",
    // 13: tenants deleted while their agents' purges wait (`purge_after_secs`): the
    // tenant's projects and its own row go once the last of those agents is purged.
    "CREATE TABLE tenant_purges (
        tenant_id TEXT PRIMARY KEY,
        requested_ms INTEGER NOT NULL);",
    // 14: every version of an agent's spec (immutable; the latest is in force and is also
    // `agents.spec_json`). Agents from before get their stored spec as version 1.
    "CREATE TABLE spec_versions (
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        version INTEGER NOT NULL,
        spec_json TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        author TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (tenant_id, agent, version),
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name));
     INSERT INTO spec_versions
        SELECT tenant_id, name, 1, spec_json, created_at_ms, 'agenfleetd',
               'the spec in force when versions began'
        FROM agents;",
    // 15: a tenant's own audit retention (NULL: the platform's `audit_retention_days`).
    "ALTER TABLE tenants ADD COLUMN audit_retention_days REAL;",
    // 16: the isolation tiers' registry: a dedicated tenant (its rows in
    // `tenants/<tenant>.db`, see tiers.rs) has a row; a standard one has none.
    "CREATE TABLE tenant_tiers (
        tenant_id TEXT PRIMARY KEY,
        tier TEXT NOT NULL,
        since_ms INTEGER NOT NULL);",
    // 17: runs (one unit of work for one agent each): queued, running, and how each
    // ended. Ids are the daemon's, unique across tenants.
    "CREATE TABLE runs (
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        id INTEGER NOT NULL,
        project TEXT NOT NULL,
        trigger TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        state TEXT NOT NULL,
        input_json TEXT NOT NULL,
        result_json TEXT,
        error TEXT,
        created_ms INTEGER NOT NULL,
        started_ms INTEGER,
        ended_ms INTEGER,
        deadline_ms INTEGER,
        PRIMARY KEY (tenant_id, id),
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name));
     CREATE INDEX runs_agent ON runs(tenant_id, agent, id);
     CREATE INDEX runs_state ON runs(state);",
    // 18: triggers: webhook subscriptions (token kept as its SHA-256, signing secret
    // sealed by the vault; a rotated-out secret verifies until old_until_ms) and
    // schedules (cron, UTC; last_due_ms is the last due time handled).
    "CREATE TABLE triggers (
        tenant_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        id TEXT NOT NULL,
        project TEXT NOT NULL,
        kind TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER,
        token_sha256 TEXT,
        secret_key INTEGER,
        secret_sealed BLOB,
        rotated_ms INTEGER,
        old_secret_key INTEGER,
        old_secret_sealed BLOB,
        old_until_ms INTEGER,
        rate_per_min INTEGER NOT NULL DEFAULT 60,
        cron TEXT,
        input_json TEXT NOT NULL DEFAULT '{}',
        catch_up TEXT NOT NULL DEFAULT 'skip',
        overlap INTEGER NOT NULL DEFAULT 0,
        last_due_ms INTEGER,
        PRIMARY KEY (tenant_id, id),
        FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name));
     CREATE INDEX triggers_agent ON triggers(tenant_id, agent);",
    // 19: a job run's output (its container is removed when it ends): JSON lines of
    // {ts_ms, stream, text}, redacted, capped (runtime/jobs.rs).
    "ALTER TABLE runs ADD COLUMN logs_json TEXT;",
];
