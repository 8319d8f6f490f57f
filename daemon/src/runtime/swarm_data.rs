//! Swarm mode: what an agent's task gets in place of the daemon host's files, so that it
//! starts the same on any node. The spec's `[[files]]` become Swarm configs (kept in
//! Swarm's replicated store, written by the node's engine into that task alone, read-only
//! for the agent's user); one config per file, named by its content, so an unchanged file
//! is not made again and a changed one is a new config (configs cannot change). The
//! TLS inspection CA bundle, for an agent that has one, is a config too. The
//! workspace is a named volume of the node the task runs on — the engine's `local` driver
//! unless `swarm_volume_driver` names one whose volumes follow a task to another node. The
//! shim comes in the agent's init image (`image::ensure_init_image`).

use super::container::{LABEL_AGENT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_TENANT};
use super::engine::{bollard_err, is_conflict, is_not_found, remove_later};
use super::swarm::{swarm_name, swarm_name_with};
use crate::store::AgentKey;
use agenfleet_protocol::{ApiError, FileSpec};
use bollard::models::{
    ConfigSpec, Mount, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
    TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile1,
};
use bollard::Docker;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Swarm's largest config (its store's limit): a file past it cannot reach a task.
pub const CONFIG_LIMIT: usize = 1000 * 1024;

/// What a task mounts of the agent's own data, beyond the spec's container.
#[derive(Debug, Default, Clone)]
pub struct TaskData {
    pub configs: Vec<TaskSpecContainerSpecConfigs>,
    pub mounts: Vec<Mount>,
}

/// The agent's workspace volume: `agfws_<instance>_<tenant>_<name>`.
pub fn workspace_volume(instance: &str, key: &AgentKey) -> String {
    swarm_name("agfws", instance, key)
}

fn agent_labels(instance: &str, key: &AgentKey) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_TENANT.to_string(), key.tenant.clone()),
        (LABEL_AGENT.to_string(), key.name.clone()),
    ])
}

/// The config of the `i`th file: the agent's name and a digest of where it goes and what
/// it holds.
fn config_name(instance: &str, key: &AgentKey, i: usize, f: &FileSpec) -> String {
    let mut h = Sha256::new();
    h.update(f.target.as_bytes());
    h.update([0]);
    h.update(&f.content);
    let d = hex::encode(h.finalize());
    swarm_name_with("agffile", instance, key, &format!("{i}x{}", &d[..10]))
}

/// Why a spec's files cannot go to a task (one past Swarm's limit), if one cannot.
pub fn check_files(files: &[FileSpec]) -> Result<(), String> {
    for (i, f) in files.iter().enumerate() {
        if f.content.len() > CONFIG_LIMIT {
            return Err(format!(
                "field `files[{i}].source`: {} KiB is past Swarm's limit for a file a task receives ({} KiB, engine_mode = \"swarm\")",
                f.content.len() / 1024,
                CONFIG_LIMIT / 1024
            ));
        }
    }
    Ok(())
}

/// Makes sure each of the spec's files is a config (made once per content) and answers
/// the task's data: the configs at their targets for the agent's user (`uid:gid`), and the
/// workspace volume when the spec has one.
pub async fn ensure(
    docker: &Docker,
    instance: &str,
    key: &AgentKey,
    spec: &agenfleet_protocol::AgentSpec,
    agent_user: &str,
    volume_driver: &str,
) -> Result<TaskData, ApiError> {
    let mut data = TaskData::default();
    for (i, f) in spec.files.iter().enumerate() {
        let name = config_name(instance, key, i, f);
        let id = ensure_config(docker, &name, agent_labels(instance, key), &f.content).await?;
        data.configs
            .push(config_ref(id, name, &f.target, agent_user));
    }
    if spec.workspace.is_some() {
        data.mounts.push(Mount {
            target: Some(agenfleet_protocol::spec::WORKSPACE_IN_CONTAINER.to_string()),
            source: Some(workspace_volume(instance, key)),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            volume_options: Some(MountVolumeOptions {
                labels: Some(agent_labels(instance, key)),
                driver_config: Some(MountVolumeOptionsDriverConfig {
                    name: Some(volume_driver.to_string()),
                    options: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Ok(data)
}

/// The config `name` holding `content`, made unless it is there (its name says what it
/// holds); answers its id.
async fn ensure_config(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
    content: &[u8],
) -> Result<String, ApiError> {
    use base64::Engine as _;
    match docker.inspect_config(name).await {
        Ok(c) => return Ok(c.id.unwrap_or_default()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(bollard_err("inspect a config of the agent's", e)),
    }
    let made = docker
        .create_config(ConfigSpec {
            name: Some(name.to_string()),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(content)),
            ..Default::default()
        })
        .await;
    match made {
        Ok(r) => Ok(r.id),
        // Made at the same moment by another start of the same agent.
        Err(e) if is_conflict(&e) => Ok(docker
            .inspect_config(name)
            .await
            .map_err(|e| bollard_err("inspect a config of the agent's", e))?
            .id
            .unwrap_or_default()),
        Err(e) => Err(bollard_err("create a config for the agent", e)),
    }
}

/// A config as a task mounts it: at `target`, read-only, the agent's user's (`uid:gid`).
fn config_ref(
    id: String,
    name: String,
    target: &str,
    agent_user: &str,
) -> TaskSpecContainerSpecConfigs {
    let (uid, gid) = agent_user
        .split_once(':')
        .unwrap_or((agent_user, agent_user));
    TaskSpecContainerSpecConfigs {
        file: Some(TaskSpecContainerSpecFile1 {
            name: Some(target.to_string()),
            uid: Some(uid.to_string()),
            gid: Some(gid.to_string()),
            mode: Some(0o444),
        }),
        config_id: Some(id),
        config_name: Some(name),
        ..Default::default()
    }
}

/// The TLS inspection CA bundle (`pem`) for an agent whose https to a connection is
/// inspected, as a config (`agffile_…_cax<digest>`, named by content like the spec's
/// files) at `upstreams::INSPECT_BUNDLE_IN_CONTAINER` — in container mode a file in the
/// gateway directory of the daemon's host. Public (a CA certificate and the system roots),
/// so a config rather than a secret.
pub async fn ca_bundle_config(
    docker: &Docker,
    instance: &str,
    key: &AgentKey,
    pem: &[u8],
    agent_user: &str,
) -> Result<TaskSpecContainerSpecConfigs, ApiError> {
    let d = hex::encode(Sha256::digest(pem));
    let name = swarm_name_with("agffile", instance, key, &format!("cax{}", &d[..10]));
    let id = ensure_config(docker, &name, agent_labels(instance, key), pem).await?;
    Ok(config_ref(
        id,
        name,
        crate::upstreams::INSPECT_BUNDLE_IN_CONTAINER,
        agent_user,
    ))
}

/// Where a job run's task finds its input.
pub fn input_target() -> String {
    format!("{}/input.json", super::jobs::RUN_DIR_IN_CONTAINER)
}

/// A job run's input as a config for its task alone (`agfin_…_r<run>x<digest>`), labelled
/// with the run rather than as the agent's file configs are, so `remove_configs` leaves
/// it to the run's end (`swarm_jobs::remove`).
pub async fn input_config(
    docker: &Docker,
    instance: &str,
    key: &AgentKey,
    run: u64,
    input: &str,
    agent_user: &str,
) -> Result<TaskSpecContainerSpecConfigs, ApiError> {
    let d = hex::encode(Sha256::digest(input.as_bytes()));
    let name = swarm_name_with("agfin", instance, key, &format!("r{run}x{}", &d[..10]));
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (super::jobs::LABEL_RUN.to_string(), run.to_string()),
    ]);
    let id = ensure_config(docker, &name, labels, input.as_bytes()).await?;
    Ok(config_ref(id, name, &input_target(), agent_user))
}

/// Removes the agent's configs other than `keep` (a changed file's old config, or all of
/// them when the agent goes), each once no task holds it any more.
pub async fn remove_configs(
    docker: &Docker,
    instance: &str,
    key: &AgentKey,
    keep: &[String],
) -> Result<(), ApiError> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_TENANT}={}", key.tenant),
            format!("{LABEL_AGENT}={}", key.name),
        ],
    )]);
    let opts = bollard::query_parameters::ListConfigsOptionsBuilder::default()
        .filters(&filters)
        .build();
    let configs = docker
        .list_configs(Some(opts))
        .await
        .map_err(|e| bollard_err("list the agent's file configs", e))?;
    for c in configs {
        let name = c.spec.and_then(|s| s.name).unwrap_or_default();
        let Some(id) = c.id.filter(|_| !keep.contains(&name)) else {
            continue;
        };
        let docker = docker.clone();
        remove_later(format!("file config {name}"), move || {
            let (docker, id) = (docker.clone(), id.clone());
            async move { docker.delete_config(&id).await }
        });
    }
    Ok(())
}

/// Removes the agent's workspace volume from the daemon's own node (the purge), waiting
/// up to a minute for its task's container to let it go; answers whether there was one.
/// A volume on another node stays there (see docs/scale-out.md).
pub async fn remove_workspace_volume(
    docker: &Docker,
    instance: &str,
    key: &AgentKey,
) -> Result<bool, ApiError> {
    let name = workspace_volume(instance, key);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match docker
            .remove_volume(
                &name,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await
        {
            Ok(()) => return Ok(true),
            Err(e) if is_not_found(&e) => return Ok(false),
            // In use by the task's container, which Swarm is still stopping.
            Err(e) if is_conflict(&e) && std::time::Instant::now() < until => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => return Err(bollard_err("remove the agent's workspace volume", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(target: &str, content: &[u8]) -> FileSpec {
        FileSpec {
            source: "x".into(),
            target: target.into(),
            content: content.to_vec(),
        }
    }

    #[test]
    fn a_files_config_is_named_by_what_it_holds_and_where_it_goes() {
        let key = AgentKey {
            tenant: "acme".into(),
            name: "bot".into(),
        };
        let a = config_name("i1", &key, 0, &file("/etc/a", b"one"));
        assert!(a.starts_with("agffile_i1_acme_bot_0x"), "{a}");
        assert_eq!(a, config_name("i1", &key, 0, &file("/etc/a", b"one")));
        assert_ne!(a, config_name("i1", &key, 0, &file("/etc/a", b"two")));
        assert_ne!(a, config_name("i1", &key, 0, &file("/etc/b", b"one")));
        assert!(a.len() <= 63);
    }

    #[test]
    fn a_file_past_swarms_limit_is_named_with_both_sizes() {
        let big = file("/etc/big", &vec![0u8; CONFIG_LIMIT + 1]);
        let e = check_files(&[file("/etc/a", b"ok"), big]).unwrap_err();
        assert!(
            e.contains("files[1].source") && e.contains("1000 KiB"),
            "{e}"
        );
        assert!(check_files(&[file("/etc/a", &vec![0u8; CONFIG_LIMIT])]).is_ok());
    }
}
