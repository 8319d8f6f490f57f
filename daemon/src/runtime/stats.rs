//! CPU and memory of running agents, read from their cgroups (v1 or v2) on the host: a
//! few small file reads per agent per sample, no request to the engine per container.
//! Where a container's cgroup is comes from its init's `/proc/<pid>/cgroup` (the pid from
//! the engine's inspect when it starts or is adopted), so the systemd or cgroupfs driver,
//! rootless Docker and Podman all work; the layouts of Docker's two drivers are the
//! fallback when that file cannot be read (another pid namespace).

use crate::fleet_state::FleetState;
use crate::store::AgentKey;
use agenfleet_protocol::AgentState;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One reading of a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Total CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use (without page cache that can be dropped), in bytes.
    pub memory_bytes: u64,
}

/// Where one container's cgroup is, relative to the cgroup root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPath {
    V2(PathBuf),
    V1 { cpuacct: PathBuf, memory: PathBuf },
}

/// Reads `/proc/<pid>/cgroup`'s text for the container `id`. Only a path that names the
/// container is taken: a pid the engine reports from another pid namespace may be some
/// other process here, and a path with `..` lies outside this cgroup namespace's view.
pub fn parse_proc_cgroup(text: &str, id: &str, v2: bool) -> Option<CgroupPath> {
    let rel = |p: &str| -> Option<PathBuf> {
        (p.contains(id) && !p.split('/').any(|c| c == ".."))
            .then(|| PathBuf::from(p.trim_start_matches('/')))
    };
    let mut cpuacct = None;
    let mut memory = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if v2 {
            if ctrls.is_empty() {
                return rel(path).map(CgroupPath::V2);
            }
            continue;
        }
        for c in ctrls.split(',') {
            match c {
                "cpuacct" => cpuacct = rel(path),
                "memory" => memory = rel(path),
                _ => {}
            }
        }
    }
    Some(CgroupPath::V1 {
        cpuacct: cpuacct?,
        memory: memory?,
    })
}

/// Finds and reads container cgroups.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    root: PathBuf,
    v2: bool,
    /// Containers' cgroups as their processes say (`learn`); others are guessed.
    known: std::sync::Arc<std::sync::Mutex<HashMap<String, CgroupPath>>>,
}

impl Default for CgroupReader {
    fn default() -> Self {
        Self::new(Path::new("/sys/fs/cgroup"))
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == field).then(|| v.trim().parse().ok()).flatten()
    })
}

impl CgroupReader {
    pub fn new(root: &Path) -> CgroupReader {
        let v2 = root.join("cgroup.controllers").exists();
        CgroupReader {
            root: root.to_path_buf(),
            v2,
            known: Default::default(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, CgroupPath>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns where container `id` (whose init is `pid`, as the engine says) has its
    /// cgroup, from `/proc/<pid>/cgroup`; answers whether it could.
    pub fn learn(&self, id: &str, pid: i64) -> bool {
        let found = (pid > 0)
            .then(|| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
            .flatten()
            .and_then(|t| parse_proc_cgroup(&t, id, self.v2));
        let ok = found.is_some();
        match found {
            Some(p) => self.known().insert(id.to_string(), p),
            None => self.known().remove(id),
        };
        ok
    }

    /// Forgets the containers not in `ids` (gone).
    pub fn retain(&self, ids: &HashSet<String>) {
        self.known().retain(|id, _| ids.contains(id));
    }

    /// Reads the cgroup of the container with full id `id`: where its process said, else
    /// Docker's cgroupfs and systemd drivers' layouts.
    pub fn read(&self, id: &str) -> Option<Sample> {
        if let Some(p) = self.known().get(id).cloned() {
            return self.read_at(&p);
        }
        let guesses = [
            PathBuf::from("system.slice").join(format!("docker-{id}.scope")),
            PathBuf::from("docker").join(id),
        ];
        guesses.into_iter().find_map(|sub| {
            self.read_at(&if self.v2 {
                CgroupPath::V2(sub)
            } else {
                CgroupPath::V1 {
                    cpuacct: sub.clone(),
                    memory: sub,
                }
            })
        })
    }

    fn read_at(&self, p: &CgroupPath) -> Option<Sample> {
        match p {
            CgroupPath::V2(sub) => {
                let dir = self.root.join(sub);
                let usage_us = stat_field(&dir.join("cpu.stat"), "usage_usec")?;
                let current = read_u64(&dir.join("memory.current")).unwrap_or(0);
                let inactive = stat_field(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
                Some(Sample {
                    cpu_ns: usage_us * 1000,
                    memory_bytes: current.saturating_sub(inactive),
                })
            }
            CgroupPath::V1 { cpuacct, memory } => {
                let cpu_ns = read_u64(
                    &self
                        .root
                        .join("cpuacct")
                        .join(cpuacct)
                        .join("cpuacct.usage"),
                )?;
                let mem_dir = self.root.join("memory").join(memory);
                let usage = read_u64(&mem_dir.join("memory.usage_in_bytes")).unwrap_or(0);
                let inactive =
                    stat_field(&mem_dir.join("memory.stat"), "total_inactive_file").unwrap_or(0);
                Some(Sample {
                    cpu_ns,
                    memory_bytes: usage.saturating_sub(inactive),
                })
            }
        }
    }
}

/// CPU percent of one core between two samples taken `wall_ns` apart.
pub fn cpu_percent(prev: &Sample, now: &Sample, wall_ns: u64) -> f32 {
    if wall_ns == 0 {
        return 0.0;
    }
    let used = now.cpu_ns.saturating_sub(prev.cpu_ns);
    (used as f64 * 100.0 / wall_ns as f64) as f32
}

/// Publishes one running agent's CPU and memory (None: not known now), from a reading its
/// task's shim sent (swarm mode).
pub fn publish_one(fleet: &FleetState, key: &AgentKey, reading: Option<(f32, u64)>) {
    let now_ms = agenfleet_protocol::now_ms();
    if let Some((cpu, mem)) = reading {
        crate::pulse::history().agent_sample(key, cpu, mem, now_ms);
    }
    fleet.update_one(key, |v| {
        let new = match reading {
            Some((c, m)) if v.state == AgentState::Running => (Some(c), Some(m)),
            _ => (None, None),
        };
        if (v.cpu_percent, v.memory_bytes) == new {
            return false;
        }
        v.cpu_percent = new.0;
        v.memory_bytes = new.1;
        true
    });
}

/// Samples CPU and memory of the running agents from their cgroups every `interval` and
/// publishes what changed to the fleet state (forever).
pub async fn sample_loop(fleet: FleetState, cgroups: CgroupReader, interval: Duration) {
    let mut prev: HashMap<String, (Sample, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (_, _, agents) = fleet.snapshot(|v| v.state == AgentState::Running);
        let mut results: HashMap<AgentKey, (f32, u64)> = HashMap::new();
        let mut seen = HashSet::new();
        for v in agents {
            let Some(id) = v.container_id.clone() else {
                continue;
            };
            let Some(s) = cgroups.read(&id) else {
                continue;
            };
            let now = Instant::now();
            let cpu = prev
                .get(&id)
                .map(|(p, t)| cpu_percent(p, &s, now.duration_since(*t).as_nanos() as u64))
                .unwrap_or(0.0);
            prev.insert(id.clone(), (s, now));
            seen.insert(id);
            results.insert(
                AgentKey {
                    tenant: v.tenant,
                    name: v.name,
                },
                ((cpu * 10.0).round() / 10.0, s.memory_bytes),
            );
        }
        let now_ms = agenfleet_protocol::now_ms();
        for (k, (cpu, mem)) in &results {
            crate::pulse::history().agent_sample(k, *cpu, *mem, now_ms);
        }
        prev.retain(|id, _| seen.contains(id));
        cgroups.retain(&seen);
        fleet.update_many(|k, v| {
            let new = if v.state == AgentState::Running {
                results
                    .get(k)
                    .map(|(c, m)| (Some(*c), Some(*m)))
                    .unwrap_or((None, None))
            } else {
                (None, None)
            };
            if (v.cpu_percent, v.memory_bytes) == new {
                return false;
            }
            v.cpu_percent = new.0;
            v.memory_bytes = new.1;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_paths_are_taken_only_when_they_name_the_container() {
        let id = "ae3413";
        let v1 = "9:name=systemd:/docker/ae3413\n4:memory:/docker/ae3413\n2:cpu,cpuacct:/docker/ae3413\n0::/docker/ae3413\n";
        assert_eq!(
            parse_proc_cgroup(v1, id, false),
            Some(CgroupPath::V1 {
                cpuacct: "docker/ae3413".into(),
                memory: "docker/ae3413".into()
            })
        );
        // Rootless Docker / Podman under systemd, cgroup v2.
        let v2 = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/libpod-ae3413.scope\n";
        assert_eq!(
            parse_proc_cgroup(v2, id, true),
            Some(CgroupPath::V2(
                "user.slice/user-1000.slice/user@1000.service/app.slice/libpod-ae3413.scope".into()
            ))
        );
        // Some other process (a pid from another namespace), or a path outside our view.
        assert_eq!(parse_proc_cgroup("0::/init.scope\n", id, true), None);
        assert_eq!(
            parse_proc_cgroup("0::/../docker-ae3413.scope\n", id, true),
            None
        );
        assert_eq!(
            parse_proc_cgroup("4:memory:/docker/ae3413\n", id, false),
            None
        );
    }

    #[test]
    fn a_learned_path_is_read_instead_of_the_guessed_layouts() {
        let root = std::env::temp_dir().join(format!("agf-cg2-{}", std::process::id()));
        let id = "def";
        let dir = root.join("user.slice/libpod-def.scope");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 7\n").unwrap();
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        let r = CgroupReader::new(&root);
        assert!(r.read(id).is_none(), "not in a guessed layout");
        r.known().insert(
            id.into(),
            CgroupPath::V2("user.slice/libpod-def.scope".into()),
        );
        let s = r.read(id).unwrap();
        assert_eq!((s.cpu_ns, s.memory_bytes), (7000, 4096));
        r.retain(&HashSet::new());
        assert!(r.read(id).is_none());
        // A pid that is not a process here teaches nothing.
        assert!(!r.learn(id, 0));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn reads_a_fake_v1_tree() {
        let root = std::env::temp_dir().join(format!("agf-cg-{}", std::process::id()));
        let id = "abc";
        let cpu = root.join("cpuacct/docker").join(id);
        let mem = root.join("memory/docker").join(id);
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(cpu.join("cpuacct.usage"), "5000\n").unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "1000\n").unwrap();
        std::fs::write(
            mem.join("memory.stat"),
            "cache 1\ntotal_inactive_file 200\n",
        )
        .unwrap();
        let r = CgroupReader::new(&root);
        let s = r.read(id).unwrap();
        assert_eq!(s.cpu_ns, 5000);
        assert_eq!(s.memory_bytes, 800);
        assert!(r.read("missing").is_none());
        let later = Sample {
            cpu_ns: 5000 + 500_000_000,
            memory_bytes: 0,
        };
        assert!((cpu_percent(&s, &later, 1_000_000_000) - 50.0).abs() < 0.01);
        let _ = std::fs::remove_dir_all(&root);
    }
}
