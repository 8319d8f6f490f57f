//! Tests of the store: records, tenant-bound reads and writes, purges, migrations.

use super::*;

fn rec(tenant: &str, name: &str) -> AgentRecord {
    let spec = AgentSpec::from_toml(&format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\nimage = \"agenfleet/agent\"\n"
    ))
    .unwrap();
    AgentRecord::new(spec, 1)
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
        reason: None,
        code: 137,
        oom_killed: true,
        unhealthy: false,
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
    // The agent's stored spec became its version 1.
    let (n, spec): (i64, String) = s
        .with(|c| {
            c.query_row(
                "SELECT COUNT(*), MAX(spec_json) FROM spec_versions WHERE tenant_id = 'acme' AND agent = 'a1' AND version = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .unwrap();
    assert_eq!((n, spec.as_str()), (1, "{}"));
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

#[test]
fn spec_versions_are_immutable_steps_and_a_stale_expected_version_changes_nothing() {
    let s = Store::open_in_memory().unwrap();
    let a = rec("acme", "a1");
    s.insert_agent_as(&a, "alice").unwrap();
    let v = s.spec_versions(&a.key).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].version, v[0].author.as_str(), v[0].note.as_str()),
        (1, "alice", "created")
    );
    let mut next = a.spec.clone();
    next.restart.attempts = 9;
    assert_eq!(
        s.put_spec_version(&a.key, &next, 1, "bob", "in place (restart)")
            .unwrap(),
        Ok(2)
    );
    // Someone who read version 1 and applies now is told what is in force instead.
    let mut other = a.spec.clone();
    other.env.insert("A".into(), "1".into());
    assert_eq!(
        s.put_spec_version(&a.key, &other, 1, "carol", "x").unwrap(),
        Err(2)
    );
    assert_eq!(s.agent_spec(&a.key).unwrap(), Some(next.clone()));
    assert_eq!(s.spec_version(&a.key).unwrap(), 2);
    assert_eq!(
        s.spec_version_at(&a.key, None).unwrap().map(|v| v.version),
        Some(2)
    );
    let first = s.spec_version_at(&a.key, Some(1)).unwrap().unwrap();
    assert_eq!((first.version, first.spec), (1, a.spec.clone()));
    assert!(s.spec_version_at(&a.key, Some(3)).unwrap().is_none());
    let v = s.spec_versions(&a.key).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].spec, next);
    assert_eq!(v[1].hash, next.hash());
    // Another tenant's agent of the same name has its own history; a purge takes it.
    assert!(s
        .spec_versions(&AgentKey {
            tenant: "other".into(),
            name: "a1".into()
        })
        .unwrap()
        .is_empty());
    assert!(s.delete_agent(&a.key).unwrap());
    assert!(s.spec_versions(&a.key).unwrap().is_empty());
    assert_eq!(s.spec_version(&a.key).unwrap(), 0);
}
