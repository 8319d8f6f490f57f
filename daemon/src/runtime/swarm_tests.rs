//! Tests of swarm mode's service spec, names, placement and task reading.

use super::*;
use crate::config::Config;

fn key() -> AgentKey {
    AgentKey {
        tenant: "t".into(),
        name: "a".into(),
    }
}

#[test]
fn a_service_has_the_containers_hardening_and_the_specs_placement_and_budget() {
    let spec = AgentSpec::from_toml(
        "name = \"a\"\nimage = \"agenfleet/agent\"\n[limits]\nmemory_mb = 64\ncpus = 0.5\npids = 32\n[restart]\nattempts = 3\ninterval_secs = 60\ndelay_ms = 500\n[placement]\nconstraints = [\"node.labels.zone==eu\"]\nspread = \"node.labels.rack\"\n",
    )
    .unwrap();
    let body = super::super::container::create_body(
        &Config::default(),
        "inst",
        &key(),
        &spec,
        "agenfleet/agent:x",
        std::path::Path::new("/s/gateways/t.a"),
        None,
    );
    let gateway = RemoteGateway {
        secret: TokenSecret {
            id: "sec1".into(),
            name: "agfgw_inst_t_a_0001".into(),
        },
        uid: "65534".into(),
        gid: "65534".into(),
        proxy: true,
    };
    let s = service_spec(
        "inst",
        &key(),
        &spec,
        &body,
        TaskRefs {
            network: "agfnet_inst_t_a",
            gateway: &gateway,
            data: &TaskData::default(),
            stats_interval_ms: 2000,
        },
        Scale {
            replicas: 1,
            force: 0,
        },
    );
    assert_eq!(s.name.as_deref(), Some("agf_inst_t_a"));
    let t = s.task_template.unwrap();
    let c = t.container_spec.unwrap();
    assert_eq!(c.capability_drop.unwrap(), ["ALL"]);
    assert_eq!(c.read_only, Some(true));
    assert_eq!(c.user.as_deref(), Some("65534:65534"));
    let mounts = c.mounts.unwrap();
    // The host's gateway directory is not mounted: the shim serves the sockets in a
    // tmpfs and relays them to the endpoint, with the token from the secret.
    let run = mounts
        .iter()
        .find(|m| m.target.as_deref() == Some("/run/agenfleet"))
        .unwrap();
    assert_eq!(run.typ, Some(MountType::TMPFS));
    assert!(!mounts.iter().any(|m| m.typ == Some(MountType::BIND)));
    assert!(c
        .env
        .clone()
        .unwrap()
        .contains(&"AGENFLEET_GATEWAY_REMOTE=agenfleet-gateway:4190;proxy".to_string()));
    let secret = &c.secrets.clone().unwrap()[0];
    assert_eq!(secret.secret_id.as_deref(), Some("sec1"));
    let file = secret.file.clone().unwrap();
    assert_eq!(file.name.as_deref(), Some("agenfleet-gateway"));
    assert_eq!(file.mode, Some(0o400));
    assert_eq!(file.uid.as_deref(), Some("65534"));
    let tmp = mounts
        .iter()
        .find(|m| m.target.as_deref() == Some("/tmp"))
        .unwrap();
    let o = tmp.tmpfs_options.clone().unwrap();
    assert_eq!((o.size_bytes, o.mode), (Some(16 << 20), Some(0o1777)));
    let l = t.resources.unwrap().limits.unwrap();
    assert_eq!(l.memory_bytes, Some(64 << 20));
    assert_eq!(l.nano_cpus, Some(500_000_000));
    assert_eq!(l.pids, Some(32));
    let r = t.restart_policy.unwrap();
    assert_eq!(r.max_attempts, Some(3));
    assert_eq!(r.window, Some(60_000_000_000));
    assert_eq!(r.delay, Some(500_000_000));
    let p = t.placement.unwrap();
    assert_eq!(p.constraints.unwrap(), ["node.labels.zone==eu"]);
    assert_eq!(t.log_driver.unwrap().name.as_deref(), Some("none"));
    assert_eq!(
        t.networks.unwrap()[0].target.as_deref(),
        Some("agfnet_inst_t_a")
    );
    let labels = s.labels.unwrap();
    assert_eq!(labels.get(LABEL_SERVICE_HASH), Some(&service_hash(&spec)));
    // A change of the budget or the placement changes the service's digest.
    let mut other = spec.clone();
    other.restart.attempts = 4;
    assert_ne!(service_hash(&other), service_hash(&spec));
}

#[test]
fn a_foreign_images_service_mounts_nothing_of_the_host() {
    let spec = AgentSpec::from_toml(
        "name = \"a\"\nimage = \"py/agent:1\"\ncommand = [\"/app/run\"]\n[workspace]\nsize_mb = 64\n[health]\nport = 8080\nhttp = \"/healthz\"\n",
    )
    .unwrap();
    let s = foreign_service(&spec);
    let c = s.task_template.unwrap().container_spec.unwrap();
    assert_eq!(c.image.as_deref(), Some("agenfleet/init:0123456789ab"));
    let shim = agenfleet_protocol::gateway::SHIM_IN_IMAGE;
    assert_eq!(c.command.clone().unwrap()[..2], [shim, "run"]);
    assert_eq!(c.args.clone().unwrap(), ["/app/run"]);
    assert_eq!(c.health_check.unwrap().test.unwrap()[1], shim);
    let mounts = c.mounts.unwrap();
    assert!(
        !mounts.iter().any(|m| m.typ == Some(MountType::BIND)),
        "{mounts:?}"
    );
    assert!(mounts
        .iter()
        .any(|m| m.typ == Some(MountType::VOLUME) && m.target.as_deref() == Some("/workspace")));
    assert_eq!(c.configs.unwrap()[0].config_id.as_deref(), Some("cfg1"));
}

/// The service of an agent of a foreign image (`py/agent:1`), with a file config and a
/// workspace volume, made as swarm mode makes it.
fn foreign_service(spec: &AgentSpec) -> ServiceSpec {
    // What swarm mode's init_program answers: the shim in the image, no host binds.
    let init = super::super::container::InitProgram {
        shim: None,
        argv: vec!["/app/run".into()],
        binds: Vec::new(),
        env: Vec::new(),
    };
    let body = super::super::container::create_body(
        &Config::default(),
        "inst",
        &key(),
        spec,
        "agenfleet/init:0123456789ab",
        std::path::Path::new("/s/gateways/t.a"),
        Some(&init),
    );
    let data = TaskData {
        configs: vec![bollard::models::TaskSpecContainerSpecConfigs {
            config_id: Some("cfg1".into()),
            config_name: Some("agffile_inst_t_a_0x0123456789".into()),
            ..Default::default()
        }],
        mounts: vec![Mount {
            target: Some("/workspace".into()),
            source: Some("agfws_inst_t_a".into()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }],
    };
    let gateway = RemoteGateway::new(
        TokenSecret {
            id: "sec1".into(),
            name: "agfgw_inst_t_a_0001".into(),
        },
        "65534:65534",
        false,
    );
    service_spec(
        "inst",
        &key(),
        spec,
        &body,
        TaskRefs {
            network: "agfnet_inst_t_a",
            gateway: &gateway,
            data: &data,
            stats_interval_ms: 2000,
        },
        Scale {
            replicas: 1,
            force: 0,
        },
    )
}

#[test]
fn a_job_runs_service_is_the_agents_task_as_one_task_never_restarted() {
    let spec = AgentSpec::from_toml(
        "name = \"a\"\nimage = \"py/agent:1\"\ncommand = [\"/app/run\"]\n[workspace]\nsize_mb = 64\n[runs]\nkind = \"job\"\n",
    )
    .unwrap();
    let input = bollard::models::TaskSpecContainerSpecConfigs {
        config_id: Some("in7".into()),
        config_name: Some("agfin_inst_t_a_r7x0123456789".into()),
        file: Some(bollard::models::TaskSpecContainerSpecFile1 {
            name: Some(super::super::swarm_data::input_target()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = job_service_spec(foreign_service(&spec), "agf_inst_t_a_r7".into(), 7, input);
    assert_eq!(s.name.as_deref(), Some("agf_inst_t_a_r7"));
    // One task, never restarted (not Swarm's job mode, whose removal leaks containers).
    let mode = s.mode.clone().unwrap();
    assert!(mode.replicated_job.is_none());
    assert_eq!(mode.replicated.unwrap().replicas, Some(1));
    let labels = s.labels.clone().unwrap();
    assert_eq!(labels.get("agenfleet.run").map(String::as_str), Some("7"));
    assert_eq!(labels.get("agenfleet.agent").map(String::as_str), Some("a"));
    assert!(!labels.contains_key(LABEL_SERVICE_HASH));
    let t = s.task_template.unwrap();
    assert_eq!(
        t.restart_policy.unwrap().condition,
        Some(TaskSpecRestartPolicyConditionEnum::NONE)
    );
    let c = t.container_spec.unwrap();
    assert_eq!(
        c.labels.unwrap().get("agenfleet.run").map(String::as_str),
        Some("7")
    );
    let env = c.env.unwrap();
    assert!(env.contains(&"AGENFLEET_RUN_ID=7".to_string()), "{env:?}");
    assert!(env.contains(&"AGENFLEET_RUN_INPUT=/run/agenfleet/run/input.json".to_string()));
    // The agent's file config and the run's input; still nothing of the host.
    let configs: Vec<_> = c
        .configs
        .unwrap()
        .into_iter()
        .filter_map(|c| c.config_id)
        .collect();
    assert_eq!(configs, ["cfg1", "in7"]);
    assert!(!c
        .mounts
        .unwrap()
        .iter()
        .any(|m| m.typ == Some(MountType::BIND)));
    assert_eq!(c.read_only, Some(true));
    assert_eq!(c.capability_drop.unwrap(), ["ALL"]);
}

#[test]
fn a_tasks_status_reads_as_pending_with_swarms_reason_running_or_ended() {
    use bollard::models::{ContainerStatus, TaskStatus};
    let task = |state, err: Option<&str>, code| Task {
        status: Some(TaskStatus {
            state: Some(state),
            err: err.map(str::to_string),
            container_status: Some(ContainerStatus {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        phase(&task(
            TaskState::PENDING,
            Some("no suitable node (scheduling constraints not satisfied on 1 node)"),
            None
        )),
        TaskPhase::Pending(
            "pending: no suitable node (scheduling constraints not satisfied on 1 node)".into()
        )
    );
    assert_eq!(
        phase(&task(TaskState::RUNNING, None, None)),
        TaskPhase::Running
    );
    assert_eq!(
        phase(&task(
            TaskState::FAILED,
            Some("task: non-zero exit (3)"),
            Some(3)
        )),
        TaskPhase::Ended(Some(3))
    );
    assert_eq!(
        phase(&task(TaskState::REJECTED, Some("no such image"), Some(0))),
        TaskPhase::Ended(None)
    );
}

#[test]
fn a_service_is_changed_only_when_it_does_not_run_the_spec_as_it_is() {
    let spec = AgentSpec::from_toml("name = \"a\"\nimage = \"x/y\"\n").unwrap();
    let service = |replicas: i64, hash: &str, force: u64| bollard::models::Service {
        spec: Some(ServiceSpec {
            labels: Some(HashMap::from([(
                LABEL_SERVICE_HASH.to_string(),
                hash.to_string(),
            )])),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(replicas),
                }),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                force_update: Some(force),
                container_spec: Some(TaskSpecContainerSpec {
                    secrets: Some(vec![bollard::models::TaskSpecContainerSpecSecrets {
                        file: Some(bollard::models::TaskSpecContainerSpecFile {
                            name: Some(super::super::endpoint::TOKEN_SECRET_FILE.into()),
                            ..Default::default()
                        }),
                        secret_id: Some("s1".into()),
                        secret_name: Some("agfgw_1".into()),
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let current = service_hash(&spec);
    let token = TokenSecret {
        id: "s1".into(),
        name: "agfgw_1".into(),
    };
    // None yet: made with one replica.
    let s = scale_to_run(None, &spec, &token).expect("created");
    assert_eq!((s.replicas, s.force), (1, 0));
    // Running the spec as it is, with the token: left alone.
    assert!(scale_to_run(Some(&service(1, &current, 3)), &spec, &token).is_none());
    // Scaled down (stopped, or failed): one replica, and a new task.
    let s = scale_to_run(Some(&service(0, &current, 3)), &spec, &token).expect("scaled up");
    assert_eq!((s.replicas, s.force), (1, 4));
    // Made from another spec: replaced.
    assert!(scale_to_run(Some(&service(1, "old", 0)), &spec, &token).is_some());
    // Another token (a new one, the old one unreadable): replaced, to mount it.
    let other = TokenSecret {
        id: "s2".into(),
        name: "agfgw_2".into(),
    };
    assert!(scale_to_run(Some(&service(1, &current, 3)), &spec, &other).is_some());
}

#[test]
fn service_names_fit_swarms_limit() {
    assert_eq!(service_name("0123abcd", &key()), "agf_0123abcd_t_a");
    let long = AgentKey {
        tenant: "t".repeat(40),
        name: "n".repeat(40),
    };
    let n = service_name("0123abcd", &long);
    assert!(n.len() <= 63, "{n}");
    // A secret's or a config's own part stays within the limit too (and is kept).
    let s = swarm_name_with("agfgw", "0123abcd", &long, "0a1b2c3d");
    assert!(s.len() <= 63 && s.ends_with("_0a1b2c3d"), "{s}");
    assert!(n.starts_with("agf_0123abcd_"));
    assert_ne!(
        n,
        service_name(
            "0123abcd",
            &AgentKey {
                tenant: "t".repeat(40),
                name: "m".repeat(40)
            }
        )
    );
}
