//! Each agent's private memory: a store of its own (`store.rs`: one SQLite file per agent,
//! every value sealed under that agent's key), reached by the agent only through its own
//! local API — the store is picked by the connection's identity, never by a name in the
//! request, so no path or key can name another agent's — and by operators only for
//! metadata (`stats`), an admin's audited export, and an explicit, audited handoff from
//! one agent to another of the same tenant. A deleted agent's file goes with its other
//! data when the purge runs (the file removed, not emptied).
//!
//! Open stores are kept (one connection each) until their agent's purge.

pub mod store;

use crate::store::AgentKey;
use crate::vault::Vault;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
pub use store::{AgentStore, Entry, Kind};

/// The longest key accepted (bytes of UTF-8).
pub const MAX_KEY_BYTES: usize = 512;
/// The key `GET /v1/memory/search` takes for itself.
pub const RESERVED_KEY: &str = "search";

/// What one agent's memory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_value_bytes: u64,
    pub max_keys: u64,
    pub max_bytes: u64,
}

/// What one agent's memory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
    /// 0: never written.
    pub last_write_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MemError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    /// Over the agent's quota (507 on the local API).
    #[error("{0}")]
    Quota(String),
    /// The vault is sealed or not initialised.
    #[error("{0}")]
    Unavailable(String),
    /// A value or file that does not open for this agent.
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Io(String),
}

/// Whether `key` may name a value: 1 to `MAX_KEY_BYTES` bytes, no control characters.
/// (Any other text is fine — `../x` is a key like another, inside the agent's own store.)
pub fn check_key(key: &str) -> Result<(), MemError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(MemError::Invalid(format!(
            "a memory key is 1 to {MAX_KEY_BYTES} bytes (this one is {})",
            key.len()
        )));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(MemError::Invalid(format!(
            "a memory key has no control characters (found U+{:04X})",
            c as u32
        )));
    }
    Ok(())
}

/// The words of a search: runs of letters and digits (at least one), at most 16.
pub fn search_words(q: &str) -> Result<Vec<String>, MemError> {
    let words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return Err(MemError::Invalid(format!(
            "the query `{q}` has no words to search for (letters or digits)"
        )));
    }
    if words.len() > 16 {
        return Err(MemError::Invalid(format!(
            "the query has {} words; at most 16",
            words.len()
        )));
    }
    Ok(words)
}

/// Stores kept open at most (each holds a file and its search index); past it, the least
/// recently used one nobody holds is closed (and opened again when next needed).
pub const MAX_OPEN_STORES: usize = 256;

struct Open {
    store: Arc<AgentStore>,
    used: std::time::Instant,
}

/// Every agent's memory on this host.
pub struct Memory {
    dir: PathBuf,
    vault: Arc<Vault>,
    pub limits: Limits,
    open: Mutex<HashMap<AgentKey, Open>>,
    max_open: usize,
}

impl Memory {
    pub fn new(state_dir: &std::path::Path, vault: Arc<Vault>, limits: Limits) -> Memory {
        Memory {
            dir: state_dir.join("memory"),
            vault,
            limits,
            open: Mutex::default(),
            max_open: MAX_OPEN_STORES,
        }
    }

    /// `new`, keeping at most `max_open` stores open (tests).
    pub fn with_max_open(mut self, max_open: usize) -> Memory {
        self.max_open = max_open.max(1);
        self
    }

    /// How many stores are open.
    pub fn open_stores(&self) -> usize {
        self.lock().len()
    }

    /// Where `agent`'s file is (tenant and agent names are checked names: no `/`, no `..`).
    pub fn path(&self, agent: &AgentKey) -> PathBuf {
        self.dir
            .join(&agent.tenant)
            .join(format!("{}.db", agent.name))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentKey, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `agent`'s store, opened (and made, with its directory, 0700) on first use.
    pub fn store(&self, agent: &AgentKey) -> Result<Arc<AgentStore>, MemError> {
        if let Some(o) = self.lock().get_mut(agent) {
            o.used = std::time::Instant::now();
            return Ok(o.store.clone());
        }
        let path = self.path(agent);
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| MemError::Io(format!("cannot make {}: {e}", dir.display())))?;
        }
        let s = Arc::new(AgentStore::open(&path, agent, &self.vault)?);
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let mut open = self.lock();
        // Room first: the least recently used stores nobody holds are closed.
        while open.len() >= self.max_open {
            let idle = open
                .iter()
                .filter(|(_, o)| Arc::strong_count(&o.store) == 1)
                .min_by_key(|(_, o)| o.used)
                .map(|(k, _)| k.clone());
            match idle {
                Some(k) => {
                    open.remove(&k);
                }
                None => break, // all in use: one more stays open for now
            }
        }
        let o = open.entry(agent.clone()).or_insert(Open {
            store: s,
            used: std::time::Instant::now(),
        });
        Ok(o.store.clone())
    }

    /// What `agent`'s memory holds, without opening a file it never had.
    pub fn usage(&self, agent: &AgentKey) -> Result<Usage, MemError> {
        if !self.lock().contains_key(agent) && !self.path(agent).exists() {
            return Ok(Usage::default());
        }
        Ok(self.store(agent)?.usage())
    }

    /// Removes `agent`'s file (and its WAL); answers the bytes it held (None: it had none).
    pub fn purge(&self, agent: &AgentKey) -> Result<Option<u64>, MemError> {
        let held = self.lock().remove(agent).map(|o| o.store.usage().bytes);
        let path = self.path(agent);
        if !path.exists() {
            return Ok(held);
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MemError::Io(format!("cannot remove {}: {e}", p.display()))),
            }
        }
        Ok(Some(held.unwrap_or(bytes)))
    }
}

#[cfg(test)]
mod tests;
