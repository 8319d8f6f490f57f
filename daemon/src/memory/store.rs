//! One agent's memory file (`<state>/memory/<tenant>/<agent>.db`): a SQLite database of
//! its own holding each value sealed with AES-256-GCM under the agent's memory key (AAD
//! `agenfleet|memory|<tenant>|<agent>|<key>`), and that key wrapped by the vault's data
//! key (AAD `agenfleet|memory-key|<tenant>|<agent>`) — so a row copied into another
//! agent's file, or the file copied into another agent's place, does not open. The words
//! of text and JSON values are indexed for search in an in-memory FTS5 table built when
//! the file is opened: nothing readable is ever written to disk.

use super::{Limits, MemError, Usage};
use crate::store::AgentKey;
use crate::vault::crypto::{self, Key32};
use crate::vault::Vault;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use zeroize::Zeroizing;

/// How a value was given (and is given back): JSON, UTF-8 text, or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Text,
    Bytes,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Text => "text",
            Kind::Bytes => "bytes",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "json" => Kind::Json,
            "text" => Kind::Text,
            _ => Kind::Bytes,
        }
    }

    fn searchable(self) -> bool {
        self != Kind::Bytes
    }
}

/// A value as read: its kind, the bytes, when it was written.
pub type Value = (Kind, Zeroizing<Vec<u8>>, u64);

/// One key's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub kind: Kind,
    pub size: u64,
    pub updated_ms: u64,
}

struct Inner {
    db: Connection,
    /// The search index of this store's text values (in memory only).
    index: Connection,
    usage: Usage,
}

/// One agent's open memory store.
pub struct AgentStore {
    agent: AgentKey,
    key: Key32,
    inner: Mutex<Inner>,
}

fn key_aad(a: &AgentKey) -> Vec<u8> {
    format!("agenfleet|memory-key|{}|{}", a.tenant, a.name).into_bytes()
}

fn value_aad(a: &AgentKey, key: &str) -> Vec<u8> {
    format!("agenfleet|memory|{}|{}|{key}", a.tenant, a.name).into_bytes()
}

/// Stamps the store's last write into the same transaction, and commits it.
fn commit_write(tx: rusqlite::Transaction<'_>, now_ms: u64) -> Result<(), MemError> {
    tx.execute(
        "UPDATE meta SET last_write_ms = ?1 WHERE id = 1",
        params![now_ms as i64],
    )
    .map_err(sql)?;
    tx.commit().map_err(sql)
}

/// Drops a key's words from the search index.
fn forget_words(index: &Connection, key: &str) -> Result<(), MemError> {
    index
        .execute("DELETE FROM words WHERE key = ?1", params![key])
        .map(|_| ())
        .map_err(sql)
}

fn sql(e: rusqlite::Error) -> MemError {
    MemError::Io(format!("memory store: {e}"))
}

impl AgentStore {
    /// Opens (or creates) the file at `path` for `agent`; its key comes from the vault.
    pub fn open(path: &Path, agent: &AgentKey, vault: &Vault) -> Result<AgentStore, MemError> {
        let db = Connection::open(path).map_err(sql)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS meta (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 tenant TEXT NOT NULL, agent TEXT NOT NULL,
                 key_id INTEGER NOT NULL, wrapped BLOB NOT NULL,
                 last_write_ms INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS mem (
                 key TEXT PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL,
                 updated_ms INTEGER NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;",
        )
        .map_err(sql)?;
        let meta: Option<(String, String, i64, Vec<u8>)> = db
            .query_row(
                "SELECT tenant, agent, key_id, wrapped FROM meta WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(sql)?;
        let key = match meta {
            Some((tenant, name, key_id, wrapped)) => {
                if (tenant.as_str(), name.as_str()) != (agent.tenant.as_str(), agent.name.as_str())
                {
                    return Err(MemError::Corrupt(format!(
                        "the memory file of {agent} was made for {tenant}/{name} (a file copied from another agent's store?)"
                    )));
                }
                let opened = vault
                    .open_value(key_id as u64, &wrapped, &key_aad(agent), "the memory key")
                    .map_err(|e| match e {
                        crate::vault::VaultError::Sealed | crate::vault::VaultError::NotInitialized => {
                            MemError::Unavailable(format!("memory needs the vault open: {e}"))
                        }
                        _ => MemError::Corrupt(format!(
                            "the memory key of {agent} does not open for this agent (a file copied from another agent's store?)"
                        )),
                    })?;
                let arr: [u8; 32] = opened.expose().try_into().map_err(|_| {
                    MemError::Corrupt(format!("the memory key of {agent} has the wrong size"))
                })?;
                Zeroizing::new(arr)
            }
            None => {
                let k = crypto::random_key();
                let (key_id, wrapped, _) = vault
                    .seal_value(
                        &agenfleet_protocol::SecretValue::new(k.to_vec()),
                        &key_aad(agent),
                    )
                    .map_err(|e| {
                        MemError::Unavailable(format!("memory needs the vault open: {e}"))
                    })?;
                db.execute(
                    "INSERT INTO meta (id, tenant, agent, key_id, wrapped) VALUES (1, ?1, ?2, ?3, ?4)",
                    params![agent.tenant, agent.name, key_id as i64, wrapped],
                )
                .map_err(sql)?;
                k
            }
        };
        let index = Connection::open_in_memory().map_err(sql)?;
        index
            .execute_batch("CREATE VIRTUAL TABLE words USING fts5(key UNINDEXED, body)")
            .map_err(sql)?;
        let store = AgentStore {
            agent: agent.clone(),
            key,
            inner: Mutex::new(Inner {
                db,
                index,
                usage: Usage::default(),
            }),
        };
        store.load()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts what is held and indexes the words of the text values.
    fn load(&self) -> Result<(), MemError> {
        let mut g = self.lock();
        let inner = &mut *g;
        let mut usage = Usage::default();
        let tx = inner.index.transaction().map_err(sql)?;
        {
            let mut st = inner
                .db
                .prepare("SELECT key, kind, size, updated_ms, sealed FROM mem")
                .map_err(sql)?;
            let mut add = tx
                .prepare("INSERT INTO words (key, body) VALUES (?1, ?2)")
                .map_err(sql)?;
            let mut rows = st.query([]).map_err(sql)?;
            while let Some(r) = rows.next().map_err(sql)? {
                let key: String = r.get(0).map_err(sql)?;
                let kind = Kind::parse(&r.get::<_, String>(1).map_err(sql)?);
                let size: i64 = r.get(2).map_err(sql)?;
                let updated: i64 = r.get(3).map_err(sql)?;
                usage.keys += 1;
                usage.bytes += size as u64;
                usage.last_write_ms = usage.last_write_ms.max(updated as u64);
                if kind.searchable() {
                    let sealed: Vec<u8> = r.get(4).map_err(sql)?;
                    if let Some(v) = crypto::open(&self.key, &sealed, &value_aad(&self.agent, &key))
                    {
                        add.execute(params![key, String::from_utf8_lossy(&v)])
                            .map_err(sql)?;
                    }
                }
            }
        }
        tx.commit().map_err(sql)?;
        let last: i64 = inner
            .db
            .query_row("SELECT last_write_ms FROM meta WHERE id = 1", [], |r| {
                r.get(0)
            })
            .map_err(sql)?;
        usage.last_write_ms = usage.last_write_ms.max(last as u64);
        inner.usage = usage;
        Ok(())
    }

    pub fn usage(&self) -> Usage {
        self.lock().usage
    }

    /// Stores `value` under `key` (replacing what was there), within the limits.
    pub fn put(
        &self,
        key: &str,
        kind: Kind,
        value: &[u8],
        limits: &Limits,
        now_ms: u64,
    ) -> Result<Usage, MemError> {
        if value.len() as u64 > limits.max_value_bytes {
            return Err(MemError::TooLarge(format!(
                "the value is {} bytes; a memory value is at most {} bytes (memory_max_value_bytes)",
                value.len(),
                limits.max_value_bytes
            )));
        }
        let sealed = crypto::seal(&self.key, value, &value_aad(&self.agent, key));
        let mut g = self.lock();
        let inner = &mut *g;
        let old: Option<i64> = inner
            .db
            .query_row("SELECT size FROM mem WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)?;
        let keys = inner.usage.keys + u64::from(old.is_none());
        let bytes = inner.usage.bytes - old.unwrap_or(0) as u64 + value.len() as u64;
        if keys > limits.max_keys {
            return Err(MemError::Quota(format!(
                "this agent's memory holds {} keys, the most it may (memory_max_keys); delete some first",
                inner.usage.keys
            )));
        }
        if bytes > limits.max_bytes {
            return Err(MemError::Quota(format!(
                "{} more bytes would take this agent's memory to {bytes} bytes, over its quota of {} (memory_max_bytes)",
                value.len(),
                limits.max_bytes
            )));
        }
        let tx = inner.db.unchecked_transaction().map_err(sql)?;
        tx.execute(
            "INSERT INTO mem (key, kind, size, updated_ms, sealed) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (key) DO UPDATE SET kind = ?2, size = ?3, updated_ms = ?4, sealed = ?5",
            params![
                key,
                kind.as_str(),
                value.len() as i64,
                now_ms as i64,
                sealed
            ],
        )
        .map_err(sql)?;
        commit_write(tx, now_ms)?;
        forget_words(&inner.index, key)?;
        if kind.searchable() {
            inner
                .index
                .execute(
                    "INSERT INTO words (key, body) VALUES (?1, ?2)",
                    params![key, String::from_utf8_lossy(value)],
                )
                .map_err(sql)?;
        }
        inner.usage = Usage {
            keys,
            bytes,
            last_write_ms: now_ms,
        };
        Ok(inner.usage)
    }

    /// The value under `key`, its kind and when it was written.
    pub fn get(&self, key: &str) -> Result<Option<Value>, MemError> {
        let row: Option<(String, i64, Vec<u8>)> = self
            .lock()
            .db
            .query_row(
                "SELECT kind, updated_ms, sealed FROM mem WHERE key = ?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql)?;
        let Some((kind, updated, sealed)) = row else {
            return Ok(None);
        };
        let value = crypto::open(&self.key, &sealed, &value_aad(&self.agent, key)).ok_or_else(|| {
            MemError::Corrupt(format!(
                "the value of `{key}` does not open with {}'s memory key: it was not written by this agent (a row copied from another store?)",
                self.agent
            ))
        })?;
        Ok(Some((Kind::parse(&kind), value, updated as u64)))
    }

    /// Removes `key`; false when there was none.
    pub fn delete(&self, key: &str, now_ms: u64) -> Result<bool, MemError> {
        let mut g = self.lock();
        let inner = &mut *g;
        let tx = inner.db.unchecked_transaction().map_err(sql)?;
        let old: Option<i64> = tx
            .query_row(
                "DELETE FROM mem WHERE key = ?1 RETURNING size",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        let Some(size) = old else {
            return Ok(false);
        };
        commit_write(tx, now_ms)?;
        forget_words(&inner.index, key)?;
        inner.usage.keys -= 1;
        inner.usage.bytes -= size as u64;
        inner.usage.last_write_ms = now_ms;
        Ok(true)
    }

    /// The keys of one export page after `after`, in order: as many as fit in
    /// `max_bytes` of values (at least one), and the key to ask after for the next page
    /// (None: none left).
    pub fn export_keys(
        &self,
        after: &str,
        max_bytes: u64,
    ) -> Result<(Vec<String>, Option<String>), MemError> {
        let mut keys = Vec::new();
        let mut bytes = 0u64;
        let mut from = after.to_string();
        loop {
            let page = self.list("", &from, 1000)?;
            let full = page.len() == 1000;
            for e in page {
                if !keys.is_empty() && bytes + e.size > max_bytes {
                    let next = keys.last().cloned();
                    return Ok((keys, next));
                }
                bytes += e.size;
                from = e.key.clone();
                keys.push(e.key);
            }
            if !full {
                return Ok((keys, None));
            }
        }
    }

    /// Keys starting with `prefix`, in order, after `after` (a page's last key), at most
    /// `limit`.
    pub fn list(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<Entry>, MemError> {
        let g = self.lock();
        let mut st =
            g.db.prepare(
                "SELECT key, kind, size, updated_ms FROM mem
                 WHERE key > ?1 AND key >= ?2 AND substr(key, 1, length(?2)) = ?2
                 ORDER BY key LIMIT ?3",
            )
            .map_err(sql)?;
        let rows = st
            .query_map(params![after, prefix, limit as i64], |r| {
                Ok(Entry {
                    key: r.get(0)?,
                    kind: Kind::parse(&r.get::<_, String>(1)?),
                    size: r.get::<_, i64>(2)? as u64,
                    updated_ms: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// The keys whose text holds every word of `words`, best first (FTS5's bm25), with
    /// their scores (lower is better, as bm25 gives them).
    pub fn search(&self, words: &[String], limit: usize) -> Result<Vec<(String, f64)>, MemError> {
        // Each word quoted: nothing the caller types is FTS5 syntax.
        let query = words
            .iter()
            .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ");
        let g = self.lock();
        let mut st = g
            .index
            .prepare("SELECT key, bm25(words) FROM words WHERE words MATCH ?1 ORDER BY bm25(words) LIMIT ?2")
            .map_err(sql)?;
        let rows = st
            .query_map(params![query, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }
}
