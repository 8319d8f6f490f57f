//! The operator side of agents' memory: stats for anyone who sees the agent (counts and
//! sizes, never values), an export for those holding `memory.export` (every value, a
//! page at a time, each page recorded as a reveal — with its keys — before it is answered), and a handoff for those holding
//! `memory.handoff` on both agents — the one path by which values of one agent reach
//! another, same tenant only, recorded with its reason and the keys it copied.

use super::FleetService;
use crate::authz::Permission;
use crate::memory::MemError;
use agenfleet_protocol::memory::{
    Handoff, MemoryEntry, MemoryExportPage, MemoryStats, MAX_EXPORT_PAGE_BYTES,
};
use agenfleet_protocol::{AgentRef, ApiError, SecretValue};

/// Most values one handoff copies.
const MAX_HANDOFF_KEYS: usize = 10_000;

pub(super) fn mem_err(e: MemError) -> ApiError {
    match e {
        MemError::Invalid(m) | MemError::TooLarge(m) => ApiError::invalid(m),
        MemError::Quota(m) => ApiError::precondition(m),
        MemError::Unavailable(m) => ApiError::unavailable(m),
        MemError::Corrupt(m) | MemError::Io(m) => ApiError::internal(m),
    }
}

impl FleetService {
    pub(super) async fn do_memory_stats(&self, agent: AgentRef) -> Result<MemoryStats, ApiError> {
        let key = self
            .find_for(&agent, Permission::FleetRead, "memory_stats")
            .await?;
        let u = self.rt.memory.usage(&key).map_err(mem_err)?;
        let l = self.rt.memory.limits;
        Ok(MemoryStats {
            agent: key.to_string(),
            keys: u.keys,
            bytes: u.bytes,
            last_write_ms: (u.last_write_ms > 0).then_some(u.last_write_ms),
            max_keys: l.max_keys,
            max_bytes: l.max_bytes,
            max_value_bytes: l.max_value_bytes,
        })
    }

    pub(super) async fn do_memory_export(
        &self,
        agent: AgentRef,
        after: String,
    ) -> Result<MemoryExportPage, ApiError> {
        let key = self
            .find_for(&agent, Permission::MemoryExport, "memory_export")
            .await?;
        let store = self.rt.memory.store(&key).map_err(mem_err)?;
        // Which values go is known before they are revealed: the page's keys, listed
        // first and recorded with the reveal.
        let (keys, next) = store
            .export_keys(&after, MAX_EXPORT_PAGE_BYTES)
            .map_err(mem_err)?;
        let usage = store.usage();
        let detail = format!(
            "reveal: {} value(s) of the agent's memory ({} keys, {} bytes in all), keys {}{} to the caller",
            keys.len(),
            usage.keys,
            usage.bytes,
            keys.first().map(String::as_str).unwrap_or("-"),
            keys.last()
                .filter(|_| keys.len() > 1)
                .map(|k| format!(" … {k}"))
                .unwrap_or_default()
        );
        self.audited("memory.export", Some(&key), detail, async move {
            let mut entries = Vec::with_capacity(keys.len());
            for k in keys {
                // (A value deleted since the listing is not in the page.)
                if let Some((kind, v, updated)) = store.get(&k).map_err(mem_err)? {
                    entries.push(MemoryEntry {
                        key: k,
                        kind: kind.as_str().into(),
                        value: SecretValue::new(v.to_vec()),
                        updated_ms: updated,
                    });
                }
            }
            Ok(MemoryExportPage { entries, next })
        })
        .await
    }

    pub(super) async fn do_memory_handoff(
        &self,
        from: AgentRef,
        to: AgentRef,
        prefix: String,
        reason: String,
    ) -> Result<Handoff, ApiError> {
        let rpc = "memory_handoff";
        let src = self.find_for(&from, Permission::MemoryHandoff, rpc).await?;
        let dst = self.find_for(&to, Permission::MemoryHandoff, rpc).await?;
        if src.tenant != dst.tenant {
            let e = ApiError::invalid(format!(
                "a handoff stays inside one tenant: {src} and {dst} are in different tenants"
            ));
            return Err(self.refused(rpc, e).await);
        }
        if src == dst {
            return Err(ApiError::invalid(
                "a handoff goes from one agent to another",
            ));
        }
        if reason.trim().is_empty() {
            return Err(ApiError::invalid("a handoff needs a reason (--reason)"));
        }
        let from_store = self.rt.memory.store(&src).map_err(mem_err)?;
        let to_store = self.rt.memory.store(&dst).map_err(mem_err)?;
        let entries = from_store
            .list(&prefix, "", MAX_HANDOFF_KEYS + 1)
            .map_err(mem_err)?;
        if entries.is_empty() {
            return Err(ApiError::not_found(format!(
                "{src}'s memory has no key starting with `{prefix}`"
            )));
        }
        if entries.len() > MAX_HANDOFF_KEYS {
            return Err(ApiError::invalid(format!(
                "more than {MAX_HANDOFF_KEYS} keys start with `{prefix}`: hand off a narrower prefix"
            )));
        }
        let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
        let bytes: u64 = entries.iter().map(|e| e.size).sum();
        let detail = format!(
            "from {src} to {dst}: {} keys starting with `{prefix}` ({bytes} bytes); reason: {}",
            keys.len(),
            reason.trim()
        );
        // Recorded before anything is copied; then each value re-sealed under the
        // receiver's key (a failure part-way says how far it got).
        let seq = self
            .rt
            .audit_event(self.event("memory.handoff", Some(&src), "ok", detail))
            .await?;
        let limits = self.rt.memory.limits;
        let now = agenfleet_protocol::now_ms();
        for (i, k) in keys.iter().enumerate() {
            let Some((kind, v, _)) = from_store.get(k).map_err(mem_err)? else {
                continue;
            };
            to_store.put(k, kind, &v, &limits, now).map_err(|e| {
                let mut err = mem_err(e);
                err.message = format!(
                    "{} (after {i} of {} keys were copied)",
                    err.message,
                    keys.len()
                );
                err
            })?;
        }
        Ok(Handoff {
            from: src.to_string(),
            to: dst.to_string(),
            keys,
            bytes,
            audit_seq: seq,
        })
    }
}
