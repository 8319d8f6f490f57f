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
        leave_swarm();
    }
}

/// Leaves the swarm (its services and tasks go), then removes what it leaves behind on
/// this engine: Swarm's bridge network, and agents' workspace volumes a test did not
/// delete (swarm tests run one at a time, so these are a test's own).
fn leave_swarm() {
    let _ = Command::new("docker")
        .args(["swarm", "leave", "--force"])
        .output();
    let _ = Command::new("docker")
        .args(["network", "rm", "docker_gwbridge"])
        .output();
    let volumes = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=agenfleet.managed=true",
        ])
        .output();
    if let Ok(v) = volumes {
        for name in String::from_utf8_lossy(&v.stdout)
            .lines()
            .filter(|n| n.starts_with("agfws_"))
        {
            // The task's container may still be going: a few tries.
            for _ in 0..20 {
                let gone = Command::new("docker")
                    .args(["volume", "rm", name])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if gone {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
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
    pub mode: Mode,
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
                mode: self,
                _swarm: None,
            }),
            Mode::Swarm => {
                let swarm = SwarmGuard::join(test)?;
                Some(ModeDaemon {
                    d: Daemon::start(name, &format!("{}{extra}", SwarmGuard::config())),
                    mode: self,
                    _swarm: Some(swarm),
                })
            }
        }
    }
}

/// The image of a second node: Debian's own `docker.io` engine on a minimal Debian root
/// (made by tests/run.sh with debootstrap from Debian's archive: no container registry).
pub const NODE_IMAGE: &str = "agenfleet-test/node:bookworm-1";

/// Capabilities a node's engine needs, by their bit: all the host can give (a VM may
/// withhold one, which `--privileged` would then fail on), checked against its bounding set.
const CAPS: [(u32, &str); 38] = [
    (0, "CHOWN"),
    (1, "DAC_OVERRIDE"),
    (2, "DAC_READ_SEARCH"),
    (3, "FOWNER"),
    (4, "FSETID"),
    (5, "KILL"),
    (6, "SETGID"),
    (7, "SETUID"),
    (8, "SETPCAP"),
    (9, "LINUX_IMMUTABLE"),
    (10, "NET_BIND_SERVICE"),
    (11, "NET_BROADCAST"),
    (12, "NET_ADMIN"),
    (13, "NET_RAW"),
    (14, "IPC_LOCK"),
    (15, "IPC_OWNER"),
    (16, "SYS_MODULE"),
    (17, "SYS_RAWIO"),
    (18, "SYS_CHROOT"),
    (19, "SYS_PTRACE"),
    (20, "SYS_PACCT"),
    (21, "SYS_ADMIN"),
    (22, "SYS_BOOT"),
    (23, "SYS_NICE"),
    (24, "SYS_RESOURCE"),
    (25, "SYS_TIME"),
    (26, "SYS_TTY_CONFIG"),
    (27, "MKNOD"),
    (28, "LEASE"),
    (29, "AUDIT_WRITE"),
    (30, "AUDIT_CONTROL"),
    (31, "SETFCAP"),
    (32, "MAC_OVERRIDE"),
    (33, "MAC_ADMIN"),
    (34, "SYSLOG"),
    (35, "WAKE_ALARM"),
    (36, "BLOCK_SUSPEND"),
    (37, "AUDIT_READ"),
];

/// A swarm of two nodes: this engine as the manager (advertising its address on the
/// default bridge, where a container can reach it) and a worker — a container running an
/// engine of its own, joined to the swarm. Everything is undone when it goes: the
/// worker, its volume, its node entry, and the swarm.
pub struct TwoNodes {
    /// The worker's hostname (its node's name).
    pub worker: String,
    /// The manager's hostname.
    pub manager: String,
    container: String,
}

impl TwoNodes {
    /// None (skipped) outside CI without an engine, a node image, or with the engine in a
    /// swarm already (this test must make its own).
    pub fn start(test: &str) -> Option<TwoNodes> {
        if !docker_available(test) {
            return None;
        }
        let skip = |why: &str| {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: {why}");
            }
            eprintln!("\n!!! SKIPPED {test}: {why} !!!\n");
        };
        let present = Command::new("docker")
            .args(["image", "inspect", NODE_IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            skip(&format!("no {NODE_IMAGE} image (tests/run.sh makes it)"));
            return None;
        }
        if swarm_state() != "inactive" {
            skip("the engine is in a swarm already; this test makes its own");
            return None;
        }
        // The default bridge's gateway: the engine's own address there (the first of
        // its subnet when the engine does not say).
        let ipam = docker(&[
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}} {{(index .IPAM.Config 0).Subnet}}",
        ]);
        let gateway = match ipam.split_once(' ') {
            Some((gw, _)) if !gw.is_empty() => gw.to_string(),
            _ => {
                let subnet = ipam.trim().split('/').next().unwrap_or_default();
                let ip: std::net::Ipv4Addr = subnet
                    .parse()
                    .unwrap_or_else(|_| panic!("the default bridge's subnet: {ipam:?}"));
                std::net::Ipv4Addr::from(u32::from(ip) + 1).to_string()
            }
        };
        docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            &gateway,
            "--default-addr-pool",
            "10.231.0.0/16",
        ]);
        let suffix = crate::daemon::rand_suffix();
        let container = format!("agf-node-{suffix}");
        let worker = format!("agfworker{suffix}");
        let bounding = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(0);
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            container.clone(),
            "--hostname".into(),
            worker.clone(),
            "--label".into(),
            "agenfleet-test.node=worker".into(),
        ];
        for (bit, name) in CAPS {
            if bounding & (1 << bit) != 0 {
                args.extend(["--cap-add".into(), name.into()]);
            }
        }
        for opt in [
            "seccomp=unconfined",
            "apparmor=unconfined",
            "systempaths=unconfined",
        ] {
            args.extend(["--security-opt".into(), opt.into()]);
        }
        args.extend(
            [
                "--device-cgroup-rule",
                "a *:* rwm",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--mount",
                "type=volume,target=/var/lib/docker",
                NODE_IMAGE,
                "sh",
                "-c",
                "mount -o remount,rw /sys; exec dockerd",
            ]
            .map(String::from),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs);
        let nodes = TwoNodes {
            worker,
            manager: docker(&["info", "--format", "{{.Name}}"]),
            container,
        };
        wait_for(
            std::time::Duration::from_secs(60),
            "the worker's engine",
            || {
                Command::new("docker")
                    .args(["exec", &nodes.container, "docker", "info"])
                    .output()
                    .is_ok_and(|o| o.status.success())
                    .then_some(())
            },
        );
        let token = docker(&["swarm", "join-token", "-q", "worker"]);
        nodes.on_worker(&[
            "swarm",
            "join",
            "--token",
            &token,
            &format!("{gateway}:2377"),
        ]);
        nodes.wait_worker("ready", std::time::Duration::from_secs(60));
        Some(nodes)
    }

    /// Waits until Swarm says the worker is `state` (`ready`, `down`).
    pub fn wait_worker(&self, state: &str, within: std::time::Duration) {
        wait_for(within, &format!("the worker {state}"), || {
            let now = docker(&[
                "node",
                "inspect",
                &self.worker,
                "--format",
                "{{.Status.State}}",
            ]);
            (now == state).then_some(())
        });
    }

    /// The command line that reaches the worker's engine (`docker …` there).
    pub fn docker_cmd(&self) -> Vec<String> {
        ["docker", "exec", "-i", self.container.as_str(), "docker"]
            .map(String::from)
            .to_vec()
    }

    /// `docker ARGS` on the worker's engine.
    pub fn on_worker(&self, args: &[&str]) -> String {
        let mut all = vec!["exec", self.container.as_str(), "docker"];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Loads an image of this engine into the worker's (there is no registry).
    pub fn load(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker save");
        let status = Command::new("docker")
            .args(["exec", "-i", &self.container, "docker", "load", "-q"])
            .stdin(save.stdout.take().expect("save's output"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("docker load");
        let saved = save.wait().expect("docker save");
        assert!(
            saved.success() && status.success(),
            "loading {image} into the worker"
        );
    }

    /// The worker goes away at once, as a machine that loses power (its engine and every
    /// task on it killed).
    pub fn kill_worker(&self) {
        docker(&["kill", &self.container]);
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.container])
            .output();
        leave_swarm();
    }
}

/// Runs `sh -c SCRIPT` in container `cid` (busybox, as the container's user).
pub fn sh_in(cid: &str, script: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["exec", cid, "/bin/busybox", "sh", "-c", script])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// From inside container `cid`: a local API request (`GET /v1/health`) straight to the
/// endpoint at `ep`, presenting `token`; answers what came back (nothing when refused).
pub fn health_through_endpoint(cid: &str, ep: &str, token: &str) -> String {
    sh_in(
        cid,
        &format!(
            "(printf 'AGF-GW1 {} api\\nGET /v1/health HTTP/1.0\\r\\n\\r\\n'; /bin/busybox sleep 3) | /bin/busybox nc -w 5 {ep} 4190",
            token.trim()
        ),
    )
}

/// The gateway endpoint's address on the overlay network of agent `tenant/name` of the
/// daemon with `instance`.
pub fn endpoint_address(instance: &str, tenant: &str, name: &str) -> String {
    let endpoint = inspect(&format!("agf_{instance}_endpoint"));
    endpoint["NetworkSettings"]["Networks"][format!("agfnet_{instance}_{tenant}_{name}")]
        ["IPAddress"]
        .as_str()
        .expect("the endpoint's address on the agent's network")
        .to_string()
}
