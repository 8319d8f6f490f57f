//! agenfleet-daemon: the library behind `agenfleetd`. It owns the daemon's parts — config,
//! store, fleet state, runtime (hub, engine, runners), authorization and the RPC servers —
//! and `prepare` (the config's values parsed by their owners) and `run`, which wires them
//! together: the hub gets the gateway server to start for each agent from here.

pub mod audit;
pub mod authz;
pub mod backup;
pub mod config;
pub mod fleet_state;
pub mod fuzz;
pub mod incidents;
pub mod keyring;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod pulse;
pub mod rpc;
pub mod runs;
pub mod runtime;
pub mod service;
pub mod store;
pub mod triggers;
pub mod upstreams;
pub mod vault;

use agenfleet_protocol::{DaemonInfo, EngineInfo, SOFTWARE_VERSION};
use anyhow::{bail, Context as _};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// Takes an exclusive lock on the state dir so two daemons never share it.
fn lock_state_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("agenfleetd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another agenfleetd is running with state dir {} (it holds {})",
            dir.display(),
            path.display()
        );
    }
    Ok(f)
}

/// Binds the operator socket, replacing a stale socket file but never a live daemon's.
/// With `group`, the socket (and a socket directory this call creates, made 0750) belong
/// to that group, so its members connect with no manual step.
async fn bind_socket(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create socket directory {}", parent.display()))?;
            if let Some(gid) = group {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o750))
                    .and_then(|_| service::chgrp(parent, gid))
                    .with_context(|| {
                        format!("cannot give {} to the socket group", parent.display())
                    })?;
            }
        }
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!("another daemon is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    if let Some(gid) = group {
        service::chgrp(path, gid).with_context(|| {
            format!(
                "cannot give {} to group {gid} (socket_group)",
                path.display()
            )
        })?;
    }
    Ok(listener)
}

/// Raises the soft limit of open descriptors to the hard limit: every connection, agent
/// gateway, audit segment and engine stream is one, and the usual soft limit of 1024 is
/// below `max_connections` alone. Answers the limit in force.
fn raise_fd_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit are given a valid rlimit struct of this process.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        if l.rlim_cur < l.rlim_max {
            let want = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    l.rlim_cur
}

/// The config with the values its owners parse from it, each parsed once before anything
/// starts: the subnet pool (runtime) and the incident matrix (incidents).
pub struct Prepared {
    pub cfg: config::Config,
    pub pool: runtime::network::SubnetPool,
    pub matrix: agenfleet_protocol::incidents::Matrix,
}

/// Parses what the config's owners judge; an error names the config file and the field.
pub fn prepare(cfg: config::Config) -> Result<Prepared, config::ConfigError> {
    let pool = runtime::network::SubnetPool::new(&cfg.network_pool, cfg.network_prefix)
        .map_err(|e| cfg.invalid("network_pool", e))?;
    let extra =
        (!cfg.incident_matrix.as_os_str().is_empty()).then_some(cfg.incident_matrix.as_path());
    let matrix = incidents::matrix::load(extra).map_err(|e| cfg.invalid("incident_matrix", e))?;
    Ok(Prepared { cfg, pool, matrix })
}

/// Runs the daemon until SIGTERM or SIGINT. Agents keep running when it stops.
pub async fn run(prepared: Prepared) -> anyhow::Result<()> {
    let Prepared { cfg, pool, matrix } = prepared;
    let fds = raise_fd_limit();
    if fds < cfg.max_connections as u64 + 256 {
        tracing::warn!(
            open_files = fds,
            max_connections = cfg.max_connections,
            "the descriptor limit is low for max_connections; raise `ulimit -n` or lower it"
        );
    }
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state dir {}", cfg.state_dir.display()))?;
    std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", cfg.state_dir.display()))?;
    let _lock = lock_state_dir(&cfg.state_dir)?;
    let db = cfg.state_dir.join("agenfleet.db");
    let store = store::Store::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    let instance = store.instance_id()?;
    let fleet = fleet_state::FleetState::new(DaemonInfo {
        version: SOFTWARE_VERSION.to_string(),
        pid: std::process::id(),
        started_at_ms: agenfleet_protocol::now_ms(),
        instance_id: instance.clone(),
        engine: EngineInfo {
            connected: false,
            version: None,
            api_version: None,
            error: Some("connecting".into()),
        },
        orphans: vec![],
        audit_writable: true,
        audit_problem: None,
        vault: agenfleet_protocol::VaultState::Uninitialized,
        operations: Vec::new(),
    });
    let vault = Arc::new(vault::Vault::open(store.clone(), instance.clone()));
    // The audit log, with its checkpoint key in the OS keyring (never in the state dir) and
    // a copy sealed in the vault (see `audit::escrow`).
    let (signer, signing) = audit::escrow::signer_at_start(&vault, &instance);
    let audit_dir = cfg.audit_dir();
    let opts = audit::Options {
        checkpoint_every: cfg.audit_checkpoint_every,
        checkpoint_interval: std::time::Duration::from_secs(cfg.audit_checkpoint_secs),
        segment_bytes: cfg.audit_segment_bytes,
    };
    let (audit, opened) = audit::AuditLog::open(&audit_dir, signer, signing, opts)
        .with_context(|| format!("cannot open the audit log in {}", audit_dir.display()))?;
    if let Some(d) = &opened.damage {
        tracing::error!("audit log: {d}");
        fleet.update_daemon(|i| {
            i.audit_writable = false;
            i.audit_problem = Some(d.clone());
        });
    }
    let vault_state = vault.state();
    fleet.update_daemon(|d| d.vault = vault_state);
    let policy = policy::PolicyEngine::new(
        store.clone(),
        cfg.approval_ttl_secs.saturating_mul(1000),
        cfg.escalation.review_reminder_secs.saturating_mul(1000),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    // The newest record before this start: a log that does not end with a clean stop
    // means the previous run died (an incident for the platform, below).
    let last = audit
        .query(
            &agenfleet_protocol::AuditQuery {
                limit: 1,
                newest: true,
                ..Default::default()
            },
            &|_| true,
        )
        .ok()
        .and_then(|v| v.into_iter().last());
    let incidents =
        incidents::Incidents::open(&cfg, matrix, store.clone(), fleet.clone(), audit.clone())
            .map_err(|e| anyhow::anyhow!("incidents: {e}"))?;
    incidents::hooks::watch_audit(&cfg, &audit, &incidents);
    incidents::hooks::tell_reviewers(&policy, &incidents, &audit);
    policy
        .escalations
        .load()
        .map_err(|e| anyhow::anyhow!("escalations: {e}"))?;
    // Agents whose calls still wait for a person show it from the start.
    for v in policy.escalations.list(false, |_| true) {
        let key = store::AgentKey {
            tenant: v.tenant.clone(),
            name: v.agent.clone(),
        };
        fleet.set_escalations(&key, policy.escalations.pending_for(&key));
    }
    let cfg = Arc::new(cfg);
    let rt = runtime::Runtime::new(runtime::Parts {
        cfg: cfg.clone(),
        store,
        fleet,
        instance: instance.clone(),
        audit,
        vault,
        policy: Arc::new(policy),
        incidents: incidents.clone(),
        pool,
        gateways: rpc::gateway::start,
    });
    // An incident names the runs its agent was working on when it was raised.
    let runs = rt.runs.clone();
    incidents.link_runs(Box::new(move |tenant, name| {
        runs.running_of(&store::AgentKey {
            tenant: tenant.to_string(),
            name: name.to_string(),
        })
    }));
    // A state dir just restored ends at the backup's cut, not at a crash: its first start
    // records the restore instead.
    let restored = backup::restore::restored_marker(&cfg.state_dir);
    if let Some(e) = last.filter(|e| e.event.action != "daemon.stop" && restored.is_none()) {
        incidents.signal(incidents::detect::Signal::DaemonUnclean {
            last_seq: e.seq,
            last_action: e.event.action.clone(),
            last_ms: e.time_ms,
        });
    }
    if let Some(d) = &opened.damage {
        incidents.signal(incidents::detect::Signal::AuditInvalid { problem: d.clone() });
    }
    if rt.vault.state() == agenfleet_protocol::VaultState::Sealed {
        let held_back = rt
            .store
            .load_agents()
            .map(|a| a.iter().filter(|r| !r.spec.credentials.is_empty()).count())
            .unwrap_or(0);
        if held_back > 0 {
            incidents.signal(incidents::detect::Signal::VaultSealed {
                held_back: held_back as u32,
            });
        }
    }
    if let Some(t) = &opened.truncated {
        let _ = rt
            .system_event("audit.truncated", None, "observed", t.clone())
            .await;
    }
    if let Some(detail) = restored {
        if rt
            .system_event("daemon.restored", None, "observed", detail)
            .await
            .is_ok()
        {
            backup::restore::clear_marker(&cfg.state_dir);
        }
    }
    let _ = rt
        .system_event(
            "daemon.start",
            None,
            "observed",
            format!(
                "agenfleetd {SOFTWARE_VERSION} pid {} instance {instance}; audit log holds {} records",
                std::process::id(),
                opened.records
            ),
        )
        .await;
    rt.audit_key_follows_vault().await;
    match rt.upstreams.restore_usage(&rt.audit) {
        Ok((tenants, calls)) => {
            tracing::info!(
                tenants,
                calls,
                "model usage restored (snapshots + audit records after them)"
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "model usage could not be restored; it starts from zero")
        }
    }
    // Queued runs wait again; running ones were interrupted (recorded) — but a job's,
    // whose container may still run, is adopted or ended once the engine answers.
    match rt.runs.recover(|v| runtime::jobs::is_job(&rt, v)).await {
        Ok((queued, interrupted)) if queued + interrupted > 0 => {
            tracing::info!(queued, interrupted, "runs recovered")
        }
        Ok(_) => {}
        Err(e) => anyhow::bail!("runs: {}", e.message),
    }
    match rt.triggers.load() {
        Ok(n) if n > 0 => tracing::info!(triggers = n, "triggers loaded"),
        Ok(_) => {}
        Err(e) => anyhow::bail!("triggers: {}", e.message),
    }
    let _scheduler = rt.triggers.spawn_scheduler();
    rt.start().context("cannot load the stored agents")?;
    // Swarm mode: the gateway for tasks on any node, through the endpoint container.
    let _swarm_gateway = if cfg.engine_mode == config::EngineMode::Swarm {
        if !cfg.swarm_overlay_encrypted {
            tracing::warn!(
                "swarm_overlay_encrypted = false: what crosses between nodes on agents' overlay networks (gateway tokens, credentials delivered over the gateway) is in clear on the network between them"
            );
        }
        Some(
            rpc::swarm_gateway::start(rt.clone())
                .context("cannot serve the swarm gateway endpoint socket")?,
        )
    } else {
        None
    };
    // Job agents' runs, each in a container of its own (woken by the runs' changes).
    let _jobs = runtime::jobs::spawn_dispatcher(rt.clone());
    runtime::retention::spawn(rt.clone());
    // Each agent's usage today reaches the fleet view once a second while it changes;
    // the meters are saved every few seconds (the records after a save are replayed at
    // the next start).
    let saver = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 1u64.. {
                tick.tick().await;
                let now = agenfleet_protocol::now_ms();
                rt.fleet.update_many(|k, v| {
                    let today = rt.upstreams.meter.row(&k.tenant, &k.name, now).today;
                    let changed = v.usage_today != today;
                    v.usage_today = today;
                    changed
                });
                if n % USAGE_SAVE_EVERY_SECS == 0 {
                    if let Err(e) = rt.upstreams.save_usage(|| rt.audit.status().head_seq) {
                        tracing::warn!(error = %e, "cannot save the usage meters");
                    }
                }
            }
        })
    };
    let group = match cfg.socket_group.as_str() {
        "" => None,
        g => Some(service::group_id(g).map_err(|e| anyhow::anyhow!("socket_group: {e}"))?),
    };
    let listener = bind_socket(&cfg.socket, cfg.socket_mode, group).await?;
    tracing::info!(socket = %cfg.socket.display(), state_dir = %cfg.state_dir.display(), %instance, version = SOFTWARE_VERSION, "agenfleetd ready");
    if !cfg.metrics_listen.is_empty() {
        let addr: std::net::SocketAddr = cfg
            .metrics_listen
            .parse()
            .map_err(|e| anyhow::anyhow!("metrics_listen: {e}"))?;
        metrics::serve(rt.clone(), addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    }
    if !cfg.http.listen.is_empty() {
        triggers::http::serve(rt.triggers.clone(), &cfg.http).await?;
    }
    service::notify(&format!("READY=1\nSTATUS=serving {}", cfg.socket.display()));
    service::spawn_watchdog();
    let server = tokio::spawn(rpc::serve(rt.clone(), listener));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping; agents keep running"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping; agents keep running"),
        r = server => tracing::error!(result = ?r, "the operator server ended"),
    }
    service::notify("STOPPING=1");
    saver.abort();
    if let Err(e) = rt.upstreams.save_usage(|| rt.audit.status().head_seq) {
        tracing::warn!(error = %e, "cannot save the usage meters");
    }
    let _ = rt
        .system_event(
            "daemon.stop",
            None,
            "observed",
            "stopping on a signal; agents keep running".into(),
        )
        .await;
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}

/// How often (seconds) the usage meters are saved.
const USAGE_SAVE_EVERY_SECS: u64 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_names_the_file_and_field_of_what_the_owners_refuse() {
        let dir = std::env::temp_dir().join(format!("agf-prep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(&p, "network_pool = \"10.0.0.0/33\"\n").unwrap();
        let cfg = config::Config::load(Some(&p)).expect("config.rs does not judge the pool");
        let e = prepare(cfg)
            .err()
            .expect("a /33 pool is refused")
            .to_string();
        assert!(e.contains("network_pool") && e.contains("c.toml"), "{e}");
        let m = dir.join("matrix.toml");
        std::fs::write(&m, "[[scenario]]\nid = 1\n").unwrap();
        std::fs::write(
            &p,
            format!("incident_matrix = {:?}\n", m.display().to_string()),
        )
        .unwrap();
        let cfg = config::Config::load(Some(&p)).unwrap();
        let e = prepare(cfg)
            .err()
            .expect("a bad matrix is refused")
            .to_string();
        assert!(
            e.contains("incident_matrix") && e.contains("matrix.toml"),
            "{e}"
        );
        std::fs::write(&p, "network_pool = \"10.9.0.0/16\"\n").unwrap();
        let ok = prepare(config::Config::load(Some(&p)).unwrap()).expect("a good config");
        assert_eq!(ok.pool.cidr(), "10.9.0.0/16");
        assert!(!ok.matrix.scenarios.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
