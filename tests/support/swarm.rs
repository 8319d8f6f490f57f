//! A one-node swarm for the swarm-mode tests: the local engine joins one (`docker swarm
//! init` on loopback) unless it is already in one, and is left as it was when the guard
//! goes (`swarm leave --force`, and the bridge network Swarm made). The tests that use it
//! run one at a time (test group `swarm` in `.config/nextest.toml`).

use crate::*;
use std::process::Command;

pub struct SwarmGuard {
    /// Whether this guard made the swarm (and so leaves it).
    made: bool,
}

fn swarm_state() -> String {
    docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
}

impl SwarmGuard {
    /// The engine in a swarm, or None (skipped) when no engine answers outside CI.
    pub fn join(test: &str) -> Option<SwarmGuard> {
        if !docker_available(test) {
            return None;
        }
        if swarm_state() == "active" {
            return Some(SwarmGuard { made: false });
        }
        // Overlay subnets from a pool of their own, away from the daemon's bridge pool.
        docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--default-addr-pool",
            "10.231.0.0/16",
        ]);
        Some(SwarmGuard { made: true })
    }

    /// The daemon's config line for swarm mode.
    pub fn config() -> &'static str {
        "engine_mode = \"swarm\"\n"
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        if !self.made {
            return;
        }
        let _ = Command::new("docker")
            .args(["swarm", "leave", "--force"])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", "docker_gwbridge"])
            .output();
    }
}

/// `docker service inspect NAME` as JSON (its first element).
pub fn service_inspect(name: &str) -> serde_json::Value {
    let out = docker(&["service", "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("service inspect JSON");
    v[0].clone()
}

/// The service's tasks as `ID STATE` lines (`docker service ps`), newest first.
pub fn service_tasks(name: &str) -> Vec<(String, String)> {
    docker(&[
        "service",
        "ps",
        name,
        "--no-trunc",
        "--format",
        "{{.ID}} {{.CurrentState}}",
    ])
    .lines()
    .filter_map(|l| {
        let (id, state) = l.split_once(' ')?;
        Some((id.to_string(), state.to_string()))
    })
    .collect()
}

/// The engine mode an end-to-end check runs in: the checks that apply to both run in
/// both (a test per mode; the swarm one's name ends in `in_swarm_mode`, which puts it in
/// the `swarm` test group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Containers,
    Swarm,
}

/// A daemon in one mode, and in swarm mode the swarm made for it (left as found after
/// the daemon is stopped).
pub struct ModeDaemon {
    pub d: Daemon,
    _swarm: Option<SwarmGuard>,
}

impl std::ops::Deref for ModeDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.d
    }
}

impl std::ops::DerefMut for ModeDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.d
    }
}

impl Mode {
    /// Starts a daemon in this mode (`extra` appended to its config); None, after saying
    /// so, when there is no engine outside CI.
    pub fn start(self, test: &str, name: &str, extra: &str) -> Option<ModeDaemon> {
        match self {
            Mode::Containers => docker_available(test).then(|| ModeDaemon {
                d: Daemon::start(name, extra),
                _swarm: None,
            }),
            Mode::Swarm => {
                let swarm = SwarmGuard::join(test)?;
                Some(ModeDaemon {
                    d: Daemon::start(name, &format!("{}{extra}", SwarmGuard::config())),
                    _swarm: Some(swarm),
                })
            }
        }
    }
}
