//! Per-agent networks. The engine's default address pools hold only ~30 bridge networks,
//! so agents that want a network get a small subnet from the daemon's own pool (config
//! `network_pool` / `network_prefix`). Agents with network mode `none` (the default) get no
//! network at all: their gateway is a Unix socket.

use super::container::{LABEL_INSTANCE, LABEL_MANAGED};
use super::engine::{bollard_err, is_conflict, is_not_found};
use agenfleet_protocol::{ApiError, NetworkMode};
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::Docker;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// A pool of equal-sized IPv4 subnets carved out of one CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPool {
    base: u32,
    pool_prefix: u8,
    prefix: u8,
}

impl SubnetPool {
    pub fn new(cidr: &str, prefix: u8) -> Result<SubnetPool, String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("`{cidr}` is not an IPv4 CIDR like 10.213.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let pool_prefix: u8 = len
            .parse()
            .map_err(|_| format!("`{len}` is not a prefix length"))?;
        if pool_prefix > 30 {
            return Err(format!("prefix /{pool_prefix} is longer than /30"));
        }
        if prefix < pool_prefix || prefix > 29 {
            return Err(format!(
                "subnet prefix /{prefix} must lie between the pool's /{pool_prefix} and /29"
            ));
        }
        let mask = if pool_prefix == 0 {
            0
        } else {
            u32::MAX << (32 - pool_prefix)
        };
        let base = u32::from(addr);
        if base & !mask != 0 {
            return Err(format!("`{cidr}` has host bits set"));
        }
        Ok(SubnetPool {
            base,
            pool_prefix,
            prefix,
        })
    }

    /// The pool as CIDR text.
    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.pool_prefix)
    }

    /// How many subnets the pool holds.
    pub fn len(&self) -> u64 {
        1u64 << (self.prefix - self.pool_prefix)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th subnet as CIDR text.
    pub fn subnet(&self, i: u64) -> Option<String> {
        if i >= self.len() {
            return None;
        }
        let size = 1u64 << (32 - self.prefix);
        let addr = Ipv4Addr::from((u64::from(self.base) + i * size) as u32);
        Some(format!("{addr}/{}", self.prefix))
    }
}

/// Makes sure the network `name` exists (an agent's own network; `internal` for mode
/// `internal`), taking a free subnet of `pool`.
pub async fn ensure(
    docker: &Docker,
    name: &str,
    instance: &str,
    pool: &SubnetPool,
    mode: NetworkMode,
) -> Result<(), ApiError> {
    match docker.inspect_network(name, None).await {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(bollard_err("inspect network", e)),
    }
    // Start at a place derived from the name to spread agents over the pool; skip
    // subnets the engine says overlap with a network that exists.
    let start = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    for i in 0..pool.len().min(256) {
        let Some(subnet) = pool.subnet((start + i) % pool.len()) else {
            break;
        };
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            internal: Some(mode == NetworkMode::Internal),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.clone()),
                    ..Default::default()
                }]),
                options: None,
            }),
            labels: Some(HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_INSTANCE.to_string(), instance.to_string()),
            ])),
            ..Default::default()
        };
        match docker.create_network(req).await {
            Ok(_) => {
                tracing::info!(network = %name, %subnet, "created an agent's network");
                return Ok(());
            }
            Err(e) if is_conflict(&e) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("overlap") =>
            {
                continue
            }
            Err(e) => return Err(bollard_err("create the agent's network", e)),
        }
    }
    Err(ApiError::unavailable(format!(
        "no free subnet left in the network pool {}",
        pool.cidr()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_subnets() {
        let p = SubnetPool::new("10.213.0.0/16", 28).unwrap();
        assert_eq!(p.cidr(), "10.213.0.0/16");
        assert_eq!(p.len(), 4096);
        assert_eq!(p.subnet(0).unwrap(), "10.213.0.0/28");
        assert_eq!(p.subnet(1).unwrap(), "10.213.0.16/28");
        assert_eq!(p.subnet(4095).unwrap(), "10.213.255.240/28");
        assert!(p.subnet(4096).is_none());
    }

    #[test]
    fn rejects_bad_pools() {
        assert!(SubnetPool::new("10.213.0.0", 28).is_err());
        assert!(SubnetPool::new("10.213.0.1/16", 28).is_err());
        assert!(SubnetPool::new("10.213.0.0/16", 12).is_err());
        assert!(SubnetPool::new("10.213.0.0/33", 28).is_err());
        assert!(SubnetPool::new("nonsense/16", 28).is_err());
    }
}
