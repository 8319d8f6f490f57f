//! Triggers: what starts agents' runs without a person — webhook subscriptions (signed
//! inbound requests, checked here before any run exists; `http` serves them) and
//! schedules (cron, UTC; `schedule` fires them). Each trigger is its tenant's row
//! (`triggers` table, agent child: it goes with its agent and moves with a dedicated
//! tenant); the live ones are also held in memory, with what checking a request needs:
//! the token's SHA-256 (the token itself is kept nowhere), the sealed signing secret(s),
//! the rate bucket and the signatures already seen.
//!
//! A webhook request is accepted only with, in this order: the subscription's own bearer
//! token (missing or unknown: 401; another subscription's: 403), a timestamp within
//! `skew_secs` of now (401), an HMAC-SHA256 of "<timestamp>.<body>" under the current
//! secret or, during a rotation's overlap, the one before (compared in constant time;
//! 401), a signature not seen before inside the window (a replay: 401), the rate (429)
//! and a JSON body (400). Each rejection is recorded as `webhook.rejected` (reason,
//! subscription, source, body digest and size, never the body) before it is answered;
//! past 20 of one reason for one subscription in 10 s the rest are counted and recorded
//! as one record when the 10 s end, so a flood cannot flood the audit log.

use crate::audit::AuditLog;
use crate::runs::Runs;
use crate::store::{AgentKey, Store, StoreError};
use crate::vault::Vault;
use agenfleet_protocol::runs::RunView;
use agenfleet_protocol::triggers::{CatchUp, TriggerKind, TriggerNew, TriggerView};
use agenfleet_protocol::{now_ms, ApiError, AuditEvent, SecretValue};
use rusqlite::params;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

pub mod http;
pub mod schedule;
#[cfg(test)]
mod tests;

/// Rejections of one reason for one subscription recorded one by one in a window…
const REJECTIONS_RECORDED: u32 = 20;
/// …of this length; the rest are counted into one record when it ends.
const REJECTION_WINDOW_MS: u64 = 10_000;
/// Signatures remembered per subscription before the expired ones are dropped.
const SEEN_PRUNE_AT: usize = 256;

/// Why a webhook request was refused: its answer's status and its recorded reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    NoToken,
    BadToken,
    OtherSubscription,
    Timestamp,
    Signature,
    Replay,
    TooLarge,
    RateLimited,
    QueueFull,
    NotJson,
    NotFound,
    Sealed,
    Unavailable,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::NoToken
            | Rejection::BadToken
            | Rejection::Timestamp
            | Rejection::Signature
            | Rejection::Replay => 401,
            Rejection::OtherSubscription => 403,
            Rejection::NotFound => 404,
            Rejection::TooLarge => 413,
            Rejection::RateLimited | Rejection::QueueFull => 429,
            Rejection::NotJson => 400,
            Rejection::Sealed | Rejection::Unavailable => 503,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Rejection::NoToken => "no-token",
            Rejection::BadToken => "bad-token",
            Rejection::OtherSubscription => "other-subscription",
            Rejection::Timestamp => "timestamp",
            Rejection::Signature => "signature",
            Rejection::Replay => "replay",
            Rejection::TooLarge => "too-large",
            Rejection::RateLimited => "rate",
            Rejection::QueueFull => "queue-full",
            Rejection::NotJson => "not-json",
            Rejection::NotFound => "not-found",
            Rejection::Sealed => "vault-sealed",
            Rejection::Unavailable => "unavailable",
        }
    }
}

/// One webhook request as it arrived (headers as sent; the body whole, within the limit).
pub struct Request<'a> {
    /// The subscription named by the path.
    pub id: &'a str,
    pub authorization: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
    /// Who sent it (for the record).
    pub source: String,
}

/// What becomes of one rejection's record.
enum Fate {
    Record,
    Counted,
    /// Counted, and the window's summary is recorded at this time.
    Summary(u64),
}

/// A sealed signing secret: (data key, sealed bytes).
#[derive(Clone)]
struct Sealed {
    key: u64,
    sealed: Vec<u8>,
}

/// A live trigger: its view and what checking or firing it needs.
struct Live {
    view: TriggerView,
    token_sha256: Option<[u8; 32]>,
    secret: Option<Sealed>,
    old_secret: Option<Sealed>,
    /// Rate bucket: tokens left and when it was last filled.
    bucket: (f64, u64),
    /// Signatures accepted, and when each leaves the replay window.
    seen: HashMap<[u8; 32], u64>,
    cron: Option<croner::Cron>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<String, Live>,
    by_token: HashMap<[u8; 32], String>,
    /// (subscription or "-", reason) → (window start, recorded, suppressed).
    rejections: HashMap<(String, &'static str), (u64, u32, u64)>,
}

/// The webhook checks' settings (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub skew_secs: u64,
    pub max_body_bytes: usize,
}

pub struct Triggers {
    store: Store,
    vault: Arc<Vault>,
    audit: AuditLog,
    runs: Arc<Runs>,
    pub limits: Limits,
    inner: Mutex<Inner>,
    /// Woken when a schedule is added or removed.
    schedules_changed: Notify,
}

const COLUMNS: &str = "id, tenant_id, project, agent, kind, created_by, created_ms, revoked_ms,
    token_sha256, secret_key, secret_sealed, rotated_ms, old_secret_key, old_secret_sealed,
    old_until_ms, rate_per_min, cron, input_json, catch_up, overlap, last_due_ms";

/// A stored row: the view and the sealed parts.
struct Row {
    view: TriggerView,
    token_sha256: Option<String>,
    secret: Option<Sealed>,
    old_secret: Option<Sealed>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let opt = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
    };
    let sealed = |k: usize, s: usize| -> rusqlite::Result<Option<Sealed>> {
        Ok(
            match (r.get::<_, Option<i64>>(k)?, r.get::<_, Option<Vec<u8>>>(s)?) {
                (Some(key), Some(sealed)) => Some(Sealed {
                    key: key.max(0) as u64,
                    sealed,
                }),
                _ => None,
            },
        )
    };
    let kind: String = r.get(4)?;
    let catch_up: String = r.get(18)?;
    Ok(Row {
        view: TriggerView {
            id: r.get(0)?,
            tenant: r.get(1)?,
            project: r.get(2)?,
            agent: r.get(3)?,
            // An unknown kind (a newer daemon's) never fires: read as a revoked webhook.
            kind: TriggerKind::parse(&kind).unwrap_or(TriggerKind::Webhook),
            created_by: r.get(5)?,
            created_ms: r.get::<_, i64>(6)?.max(0) as u64,
            revoked_ms: match TriggerKind::parse(&kind) {
                Some(_) => opt(7)?,
                None => Some(opt(7)?.unwrap_or(0)),
            },
            rotated_ms: opt(11)?,
            old_secret_until_ms: opt(14)?,
            rate_per_min: r.get::<_, i64>(15)?.clamp(0, u32::MAX as i64) as u32,
            cron: r.get(16)?,
            input_json: r.get(17)?,
            catch_up: CatchUp::parse(&catch_up).unwrap_or_default(),
            overlap: r.get::<_, i64>(19)? != 0,
            last_due_ms: opt(20)?,
            next_due_ms: None,
        },
        token_sha256: r.get(8)?,
        secret: sealed(9, 10)?,
        old_secret: sealed(12, 13)?,
    })
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::internal(format!("cannot store the trigger: {e}"))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(b).into()
}

/// Parses a cron expression (five fields, or six with seconds first; UTC).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, ApiError> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(ApiError::invalid(format!(
            "cron `{expr}` has {fields} fields: give five (minute hour day month weekday) or six (seconds first)"
        )));
    }
    croner::parser::CronParser::new()
        .parse(expr)
        .map_err(|e| ApiError::invalid(format!("cron `{expr}`: {e}")))
}

/// The first due time of `cron` strictly after `after_ms` (None: never again).
pub fn next_due(cron: &croner::Cron, after_ms: u64) -> Option<u64> {
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after_ms as i64)?;
    cron.find_next_occurrence(&at, false)
        .ok()
        .map(|t| t.timestamp_millis().max(0) as u64)
}

/// Compares two byte strings in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `sha256=<64 hex>` → the 32 bytes.
fn parse_signature(s: &str) -> Option<[u8; 32]> {
    let hex = s.trim().strip_prefix("sha256=")?;
    let v = hex::decode(hex).ok()?;
    v.try_into().ok()
}

impl Triggers {
    pub fn new(
        store: Store,
        vault: Arc<Vault>,
        audit: AuditLog,
        runs: Arc<Runs>,
        limits: Limits,
    ) -> Triggers {
        Triggers {
            store,
            vault,
            audit,
            runs,
            limits,
            inner: Mutex::new(Inner::default()),
            schedules_changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn aad(tenant: &str, id: &str) -> Vec<u8> {
        format!("agenfleet trigger secret {tenant}/{id}").into_bytes()
    }

    fn live_of(r: Row) -> Result<Live, ApiError> {
        let token_sha256 = match &r.token_sha256 {
            Some(h) => Some(
                hex::decode(h)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| {
                        ApiError::internal(format!(
                            "trigger {}: its token digest is damaged",
                            r.view.id
                        ))
                    })?,
            ),
            None => None,
        };
        let cron = match &r.view.cron {
            Some(c) if r.view.kind == TriggerKind::Schedule => Some(parse_cron(c)?),
            _ => None,
        };
        let rate = r.view.rate_per_min.max(1) as f64;
        Ok(Live {
            view: r.view,
            token_sha256,
            secret: r.secret,
            old_secret: r.old_secret,
            bucket: (rate, now_ms()),
            seen: HashMap::new(),
            cron,
        })
    }

    fn hold(inner: &mut Inner, live: Live) {
        if let Some(h) = live.token_sha256 {
            inner.by_token.insert(h, live.view.id.clone());
        }
        inner.live.insert(live.view.id.clone(), live);
    }

    fn release(inner: &mut Inner, id: &str) -> Option<Live> {
        let live = inner.live.remove(id)?;
        if let Some(h) = live.token_sha256 {
            inner.by_token.remove(&h);
        }
        Some(live)
    }

    /// Loads the triggers not revoked (at start). Answers how many.
    pub fn load(&self) -> Result<usize, ApiError> {
        let rows = self
            .store
            .rows_everywhere(
                &format!("SELECT {COLUMNS} FROM triggers WHERE revoked_ms IS NULL"),
                &[],
                row,
            )
            .map_err(store_err)?;
        let mut inner = self.lock();
        for r in rows {
            let id = r.view.id.clone();
            match Self::live_of(r) {
                Ok(l) => Self::hold(&mut inner, l),
                // One damaged row does not stop the others (or the daemon).
                Err(e) => tracing::error!(trigger = %id, error = %e.message, "trigger not loaded"),
            }
        }
        let n = inner.live.len();
        drop(inner);
        self.schedules_changed.notify_one();
        Ok(n)
    }

    /// Adds a trigger to `key` (in `project`), made by `by`. A webhook's token and secret
    /// are answered here, once.
    pub fn add(
        &self,
        key: &AgentKey,
        project: &str,
        by: &str,
        new: &TriggerNew,
    ) -> Result<(TriggerView, Option<SecretValue>, Option<SecretValue>), ApiError> {
        let id = format!("trg_{}", hex::encode(rand::random::<[u8; 8]>()));
        let now = now_ms();
        let mut view = TriggerView {
            id: id.clone(),
            tenant: key.tenant.clone(),
            project: project.to_string(),
            agent: key.name.clone(),
            kind: TriggerKind::Webhook,
            created_by: by.to_string(),
            created_ms: now,
            revoked_ms: None,
            rate_per_min: agenfleet_protocol::triggers::DEFAULT_RATE_PER_MIN,
            rotated_ms: None,
            old_secret_until_ms: None,
            cron: None,
            input_json: "{}".into(),
            catch_up: CatchUp::Skip,
            overlap: false,
            last_due_ms: None,
            next_due_ms: None,
        };
        let (mut token, mut secret, mut token_sha, mut sealed) = (None, None, None, None);
        match new {
            TriggerNew::Webhook { rate_per_min } => {
                if *rate_per_min > 100_000 {
                    return Err(ApiError::invalid("rate_per_min must be at most 100000"));
                }
                if *rate_per_min > 0 {
                    view.rate_per_min = *rate_per_min;
                }
                let t = format!(
                    "agfw_{}_{}",
                    &id[4..],
                    hex::encode(rand::random::<[u8; 24]>())
                );
                let s = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
                token_sha = Some(sha256(t.as_bytes()));
                let s = SecretValue::new(s.into_bytes());
                let (k, b, _) = self
                    .vault
                    .seal_value(&s, &Self::aad(&key.tenant, &id))
                    .map_err(|e| {
                        ApiError::unavailable(format!("cannot seal the signing secret: {e}"))
                    })?;
                sealed = Some(Sealed { key: k, sealed: b });
                token = Some(SecretValue::new(t.into_bytes()));
                secret = Some(s);
            }
            TriggerNew::Schedule {
                cron,
                input_json,
                catch_up,
                overlap,
            } => {
                let c = parse_cron(cron)?;
                if next_due(&c, now).is_none() {
                    return Err(ApiError::invalid(format!("cron `{cron}` is never due")));
                }
                let input = if input_json.trim().is_empty() {
                    "{}"
                } else {
                    input_json.as_str()
                };
                if input.len() > agenfleet_protocol::runs::MAX_RUN_INPUT {
                    return Err(ApiError::invalid(format!(
                        "the schedule's input is {} bytes; at most {}",
                        input.len(),
                        agenfleet_protocol::runs::MAX_RUN_INPUT
                    )));
                }
                serde_json::from_str::<serde_json::Value>(input).map_err(|e| {
                    ApiError::invalid(format!("the schedule's input is not JSON: {e}"))
                })?;
                view.kind = TriggerKind::Schedule;
                view.cron = Some(cron.trim().to_string());
                view.input_json = input.to_string();
                view.catch_up = *catch_up;
                view.overlap = *overlap;
                view.rate_per_min = 0;
                // Due times count from its creation.
                view.last_due_ms = Some(now);
            }
        }
        self.store
            .tenant(&key.tenant)
            .with(|c| {
                c.execute(
                    "INSERT INTO t_triggers (id, project, agent, kind, created_by, created_ms,
                        token_sha256, secret_key, secret_sealed, rate_per_min, cron, input_json,
                        catch_up, overlap, last_due_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    params![
                        view.id,
                        view.project,
                        view.agent,
                        view.kind.as_str(),
                        view.created_by,
                        now as i64,
                        token_sha.map(hex::encode),
                        sealed.as_ref().map(|s| s.key as i64),
                        sealed.as_ref().map(|s| s.sealed.clone()),
                        view.rate_per_min as i64,
                        view.cron,
                        view.input_json,
                        view.catch_up.as_str(),
                        view.overlap as i64,
                        view.last_due_ms.map(|v| v as i64),
                    ],
                )
            })
            .map_err(store_err)?;
        let live = Self::live_of(Row {
            view: view.clone(),
            token_sha256: token_sha.map(hex::encode),
            secret: sealed,
            old_secret: None,
        })?;
        let next = live.cron.as_ref().and_then(|c| next_due(c, now));
        Self::hold(&mut self.lock(), live);
        if view.kind == TriggerKind::Schedule {
            self.schedules_changed.notify_one();
        }
        view.next_due_ms = next;
        Ok((view, token, secret))
    }

    /// Trigger `id` as stored (revoked ones too), with its next due time when live.
    pub fn get(&self, id: &str) -> Result<Option<TriggerView>, ApiError> {
        let rows = self
            .store
            .rows_everywhere(
                &format!("SELECT {COLUMNS} FROM triggers WHERE id = ?1"),
                &[&id],
                row,
            )
            .map_err(store_err)?;
        Ok(rows.into_iter().next().map(|r| self.with_next(r.view)))
    }

    fn with_next(&self, mut v: TriggerView) -> TriggerView {
        let inner = self.lock();
        if let Some(l) = inner.live.get(&v.id) {
            v.next_due_ms = l.view.next_due_ms;
            v.last_due_ms = l.view.last_due_ms.or(v.last_due_ms);
            if v.next_due_ms.is_none() {
                if let Some(c) = &l.cron {
                    v.next_due_ms =
                        next_due(c, v.last_due_ms.unwrap_or(v.created_ms).max(now_ms()));
                }
            }
        }
        v
    }

    /// Every trigger (of `agent` when given), newest first.
    pub fn list(&self, agent: Option<&AgentKey>) -> Result<Vec<TriggerView>, ApiError> {
        let (tenant, name) = match agent {
            Some(k) => (Some(k.tenant.clone()), Some(k.name.clone())),
            None => (None, None),
        };
        let mut rows = self
            .store
            .rows_everywhere(
                &format!(
                    "SELECT {COLUMNS} FROM triggers
                     WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR agent = ?2)"
                ),
                &[&tenant, &name],
                row,
            )
            .map_err(store_err)?;
        rows.sort_by_key(|r| std::cmp::Reverse(r.view.created_ms));
        Ok(rows.into_iter().map(|r| self.with_next(r.view)).collect())
    }

    /// Revokes `v` at once: out of memory first (no request is accepted after this
    /// returns), then stored.
    pub fn revoke(&self, v: &TriggerView) -> Result<TriggerView, ApiError> {
        let removed = Self::release(&mut self.lock(), &v.id);
        if removed.as_ref().is_some_and(|l| l.cron.is_some()) {
            self.schedules_changed.notify_one();
        }
        let now = now_ms();
        self.store
            .tenant(&v.tenant)
            .with(|c| {
                c.execute(
                    "UPDATE t_triggers SET revoked_ms = COALESCE(revoked_ms, ?2),
                        token_sha256 = NULL, secret_key = NULL, secret_sealed = NULL,
                        old_secret_key = NULL, old_secret_sealed = NULL WHERE id = ?1",
                    params![v.id, now as i64],
                )
            })
            .map_err(store_err)?;
        Ok(self.get(&v.id)?.unwrap_or_else(|| v.clone()))
    }

    /// Revokes every trigger of `key` (its agent is deleted).
    pub fn revoke_agent(&self, key: &AgentKey) {
        let ids: Vec<TriggerView> = self
            .lock()
            .live
            .values()
            .filter(|l| l.view.tenant == key.tenant && l.view.agent == key.name)
            .map(|l| l.view.clone())
            .collect();
        for v in ids {
            if let Err(e) = self.revoke(&v) {
                tracing::error!(trigger = %v.id, error = %e.message, "cannot revoke the trigger");
            }
        }
    }

    /// A new signing secret for webhook `v`; the one before verifies until `overlap_secs`
    /// from now. Answers the trigger and the new secret.
    pub fn rotate_secret(
        &self,
        v: &TriggerView,
        overlap_secs: u64,
    ) -> Result<(TriggerView, SecretValue), ApiError> {
        if v.kind != TriggerKind::Webhook {
            return Err(ApiError::invalid(format!(
                "trigger {} is a schedule: it has no secret",
                v.id
            )));
        }
        if overlap_secs > 7 * 86_400 {
            return Err(ApiError::invalid(
                "the overlap is at most 7 days (604800 s)",
            ));
        }
        let s = SecretValue::new(
            format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>())).into_bytes(),
        );
        let (k, b, _) = self
            .vault
            .seal_value(&s, &Self::aad(&v.tenant, &v.id))
            .map_err(|e| ApiError::unavailable(format!("cannot seal the signing secret: {e}")))?;
        let now = now_ms();
        let until = now + overlap_secs * 1000;
        // Under the lock: a request checks against both secrets or the new one alone.
        let mut inner = self.lock();
        let Some(live) = inner.live.get_mut(&v.id) else {
            return Err(ApiError::precondition(format!(
                "trigger {} is revoked",
                v.id
            )));
        };
        let old = live.secret.clone();
        self.store
            .tenant(&v.tenant)
            .with(|c| {
                c.execute(
                    "UPDATE t_triggers SET secret_key = ?2, secret_sealed = ?3, rotated_ms = ?4,
                        old_secret_key = ?5, old_secret_sealed = ?6, old_until_ms = ?7
                     WHERE id = ?1",
                    params![
                        v.id,
                        k as i64,
                        b,
                        now as i64,
                        old.as_ref().map(|o| o.key as i64),
                        old.as_ref().map(|o| o.sealed.clone()),
                        until as i64
                    ],
                )
            })
            .map_err(store_err)?;
        live.old_secret = old;
        live.secret = Some(Sealed { key: k, sealed: b });
        live.view.rotated_ms = Some(now);
        live.view.old_secret_until_ms = Some(until);
        let view = live.view.clone();
        drop(inner);
        Ok((view, s))
    }

    /// The bearer token's SHA-256 (missing: `NoToken`).
    fn token_digest(authorization: Option<&str>) -> Result<[u8; 32], Rejection> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Rejection::NoToken)?;
        Ok(sha256(token.as_bytes()))
    }

    fn bound_to(inner: &Inner, digest: &[u8; 32], id: &str) -> Result<(), Rejection> {
        match inner.by_token.get(digest) {
            None => Err(Rejection::BadToken),
            Some(bound) if bound != id => Err(Rejection::OtherSubscription),
            Some(_) => Ok(()),
        }
    }

    /// The first check, on the headers alone (before a body is read): the request's token
    /// is the subscription's.
    pub fn check_token(&self, id: &str, authorization: Option<&str>) -> Result<(), Rejection> {
        let digest = Self::token_digest(authorization)?;
        Self::bound_to(&self.lock(), &digest, id)
    }

    /// Checks a webhook request (everything but its size, which the listener checks while
    /// reading it). Answers the subscription when it may start a run.
    pub fn verify(&self, req: &Request<'_>, now: u64) -> Result<TriggerView, Rejection> {
        let digest = Self::token_digest(req.authorization)?;
        // The secret is opened outside the lock (the vault has its own).
        let (secrets, view) = {
            let inner = self.lock();
            Self::bound_to(&inner, &digest, req.id)?;
            let live = inner.live.get(req.id).ok_or(Rejection::BadToken)?;
            let mut secrets: Vec<Sealed> = live.secret.iter().cloned().collect();
            if live.view.old_secret_until_ms.is_some_and(|u| now < u) {
                secrets.extend(live.old_secret.iter().cloned());
            }
            (secrets, live.view.clone())
        };
        let ts = req.timestamp.ok_or(Rejection::Timestamp)?.trim();
        let secs: i64 = ts.parse().map_err(|_| Rejection::Timestamp)?;
        let skew = self.limits.skew_secs as i64;
        if (secs.saturating_mul(1000) - now as i64).abs() > skew * 1000 {
            return Err(Rejection::Timestamp);
        }
        let given = req
            .signature
            .and_then(parse_signature)
            .ok_or(Rejection::Signature)?;
        let aad = Self::aad(&view.tenant, &view.id);
        let mut good = false;
        for s in &secrets {
            let secret = self
                .vault
                .open_value(s.key, &s.sealed, &aad, "a trigger's signing secret")
                .map_err(|e| match e {
                    crate::vault::VaultError::Sealed => Rejection::Sealed,
                    _ => Rejection::Unavailable,
                })?;
            let want = agenfleet_protocol::triggers::hmac_sha256(secret.expose(), ts, req.body);
            // Every candidate is computed and compared: no early exit tells which matched.
            good |= same(&want, &given);
        }
        if !good {
            return Err(Rejection::Signature);
        }
        if !req.body.is_empty()
            && serde_json::from_slice::<serde::de::IgnoredAny>(req.body).is_err()
        {
            return Err(Rejection::NotJson);
        }
        let mut inner = self.lock();
        let live = inner.live.get_mut(req.id).ok_or(Rejection::BadToken)?;
        if live.seen.get(&given).is_some_and(|until| *until > now) {
            return Err(Rejection::Replay);
        }
        // The rate: only requests that passed every check above count.
        let rate = live.view.rate_per_min.max(1) as f64;
        let (tokens, at) = live.bucket;
        let tokens = (tokens + (now.saturating_sub(at)) as f64 * rate / 60_000.0).min(rate);
        if tokens < 1.0 {
            live.bucket = (tokens, now);
            return Err(Rejection::RateLimited);
        }
        live.bucket = (tokens - 1.0, now);
        if live.seen.len() >= SEEN_PRUNE_AT {
            live.seen.retain(|_, until| *until > now);
        }
        // Seen until its timestamp leaves the window (a replay after that fails the
        // timestamp check).
        let until = (secs.max(0) as u64 + self.limits.skew_secs + 1) * 1000;
        live.seen.insert(given, until);
        Ok(view)
    }

    /// Forgets an accepted signature (its run could not be queued: the sender may retry
    /// the same request).
    pub fn unsee(&self, id: &str, signature: Option<&str>) {
        if let (Some(sig), Some(live)) = (
            signature.and_then(parse_signature),
            self.lock().live.get_mut(id),
        ) {
            live.seen.remove(&sig);
        }
    }

    /// Records a rejection (see the module's header), unless too many of its kind were
    /// recorded in this window: then counted, and recorded as one when the window ends.
    pub async fn record_rejection(
        self: &Arc<Self>,
        req: &Request<'_>,
        body_len: usize,
        why: Rejection,
    ) {
        let now = now_ms();
        // One lock: who the subscription is, and this rejection's place in its window.
        let (subscription, tenant, agent, key, fate) = {
            let mut inner = self.lock();
            let (subscription, tenant, agent) = match inner.live.get(req.id) {
                Some(l) => (
                    req.id.to_string(),
                    Some(l.view.tenant.clone()),
                    Some(l.view.agent.clone()),
                ),
                None => ("-".to_string(), None, None),
            };
            let key = (subscription.clone(), why.reason());
            let fate = {
                let e = inner.rejections.entry(key.clone()).or_insert((now, 0, 0));
                if now >= e.0 + REJECTION_WINDOW_MS {
                    *e = (now, 0, 0);
                }
                if e.1 < REJECTIONS_RECORDED {
                    e.1 += 1;
                    Fate::Record
                } else {
                    e.2 += 1;
                    // The first one suppressed arms the window's summary.
                    match e.2 {
                        1 => Fate::Summary(e.0 + REJECTION_WINDOW_MS),
                        _ => Fate::Counted,
                    }
                }
            };
            (subscription, tenant, agent, key, fate)
        };
        let ev = |detail: serde_json::Value| AuditEvent {
            actor: format!("webhook from {}", req.source),
            action: "webhook.rejected".into(),
            tenant: tenant.clone(),
            agent: agent.clone(),
            outcome: "denied".into(),
            detail: detail.to_string(),
        };
        match fate {
            Fate::Record => {
                let detail = serde_json::json!({
                    "reason": why.reason(),
                    "status": why.status(),
                    "subscription": (subscription != "-").then_some(&subscription),
                    "path_id": (subscription == "-").then(|| req.id.chars().take(64).collect::<String>()),
                    "source": req.source,
                    "body_bytes": body_len,
                    "body_sha256": hex::encode(sha256(req.body)),
                });
                if let Err(e) = self.audit.record(&ev(detail)).await {
                    tracing::error!(error = %e, "cannot record a webhook rejection");
                }
            }
            Fate::Counted => {}
            Fate::Summary(at) => {
                let me = self.clone();
                let mut summary = ev(serde_json::Value::Null);
                summary.actor = "agenfleetd".into();
                let mut detail = serde_json::json!({
                    "reason": why.reason(),
                    "status": why.status(),
                    "subscription": (subscription != "-").then_some(&subscription),
                    "window_ms": REJECTION_WINDOW_MS,
                });
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(
                        at.saturating_sub(now_ms()),
                    ))
                    .await;
                    let n = {
                        let mut inner = me.lock();
                        match inner.rejections.get_mut(&key) {
                            Some(e) => std::mem::take(&mut e.2),
                            None => 0,
                        }
                    };
                    detail["suppressed"] = n.into();
                    detail["note"] = format!(
                        "{n} more rejections of this kind in this window, past the {REJECTIONS_RECORDED} recorded one by one"
                    )
                    .into();
                    let mut ev = summary;
                    ev.detail = detail.to_string();
                    if let Err(e) = me.audit.record(&ev).await {
                        tracing::error!(error = %e, "cannot record the webhook rejections' summary");
                    }
                });
            }
        }
    }

    /// Starts a run of trigger `v` with `input`, recorded as `run.start` before it is
    /// queued and after (with its id). `how` is `webhook` or `schedule`; `extra` goes into
    /// the record.
    pub async fn start_run(
        &self,
        v: &TriggerView,
        how: &str,
        input: &str,
        extra: serde_json::Value,
    ) -> Result<RunView, ApiError> {
        let key = AgentKey {
            tenant: v.tenant.clone(),
            name: v.agent.clone(),
        };
        let mut extra = extra;
        if let Some(o) = extra.as_object_mut() {
            o.insert("subscription".into(), v.id.clone().into());
        } else {
            extra = serde_json::json!({ "subscription": v.id });
        }
        self.runs
            .start_recorded(crate::runs::StartRequest {
                key: &key,
                project: &v.project,
                trigger: how,
                requested_by: &format!("trigger {}", v.id),
                input,
                extra,
            })
            .await
    }
}
