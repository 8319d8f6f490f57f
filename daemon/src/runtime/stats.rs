//! CPU and memory of running agents, read from their cgroups (v1 or v2) on the host: a
//! few small file reads per agent per sample, no request to the engine per container.

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

/// Finds and reads container cgroups.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    root: PathBuf,
    v2: bool,
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
        }
    }

    /// Reads the cgroup of the container with full id `id`, trying the cgroupfs and the
    /// systemd driver's layouts.
    pub fn read(&self, id: &str) -> Option<Sample> {
        if self.v2 {
            for dir in [
                self.root
                    .join("system.slice")
                    .join(format!("docker-{id}.scope")),
                self.root.join("docker").join(id),
            ] {
                if let Some(usage_us) = stat_field(&dir.join("cpu.stat"), "usage_usec") {
                    let current = read_u64(&dir.join("memory.current")).unwrap_or(0);
                    let inactive =
                        stat_field(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
                    return Some(Sample {
                        cpu_ns: usage_us * 1000,
                        memory_bytes: current.saturating_sub(inactive),
                    });
                }
            }
            return None;
        }
        for sub in [
            PathBuf::from("docker").join(id),
            PathBuf::from("system.slice").join(format!("docker-{id}.scope")),
        ] {
            let cpu = read_u64(&self.root.join("cpuacct").join(&sub).join("cpuacct.usage"));
            if let Some(cpu_ns) = cpu {
                let mem_dir = self.root.join("memory").join(&sub);
                let usage = read_u64(&mem_dir.join("memory.usage_in_bytes")).unwrap_or(0);
                let inactive =
                    stat_field(&mem_dir.join("memory.stat"), "total_inactive_file").unwrap_or(0);
                return Some(Sample {
                    cpu_ns,
                    memory_bytes: usage.saturating_sub(inactive),
                });
            }
        }
        None
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
        prev.retain(|id, _| seen.contains(id));
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
