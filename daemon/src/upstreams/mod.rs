//! Providers and connections of each tenant: their versioned definitions (one row per
//! change in `upstreams`, the latest in force unless it is a removal), their keys sealed by
//! the vault and opened only for the length of one call, the HTTPS client each one is
//! reached with (rustls; system and webpki roots plus its own `ca_pem`; pooled
//! connections), the call itself with its fallback chain (`call.rs`), what a provider's
//! answer says about tokens (`usage.rs`) and the bounded per-agent and per-tenant totals
//! with the budgets they enforce (`meter.rs`), kept across restarts (`persist.rs`).

pub mod call;
pub mod inspect;
pub mod meter;
pub mod persist;
pub mod usage;

use crate::store::{Store, StoreError};
use crate::vault::{Vault, VaultError};
use agenfleet_protocol::{now_ms, SecretValue, UpstreamClass, UpstreamSpec, UpstreamView};
use rusqlite::params;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("storage: {0}")]
    Store(String),
}

impl From<StoreError> for UpstreamError {
    fn from(e: StoreError) -> Self {
        UpstreamError::Store(e.to_string())
    }
}

impl From<rusqlite::Error> for UpstreamError {
    fn from(e: rusqlite::Error) -> Self {
        UpstreamError::Store(e.to_string())
    }
}

impl From<UpstreamError> for agenfleet_protocol::ApiError {
    fn from(e: UpstreamError) -> Self {
        use agenfleet_protocol::ApiError;
        match e {
            UpstreamError::Invalid(m) => ApiError::invalid(m),
            UpstreamError::NotFound(m) => ApiError::not_found(m),
            UpstreamError::Exists(m) => {
                ApiError::new(agenfleet_protocol::ErrorCode::AlreadyExists, m)
            }
            UpstreamError::Vault(e) => ApiError::precondition(e.to_string()),
            UpstreamError::Store(m) => ApiError::internal(m),
        }
    }
}

pub type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// One upstream in force, with what a call needs.
pub struct Live {
    pub view: UpstreamView,
    key_id: u64,
    sealed: Vec<u8>,
    pub client: HttpsClient,
}

fn aad(tenant: &str, name: &str, key_version: u32) -> Vec<u8> {
    format!("agenfleet|upstream|{tenant}|{name}|{key_version}").into_bytes()
}

/// The system's roots (read once) and webpki's.
fn base_roots() -> &'static rustls::RootCertStore {
    static ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, "system trust roots loaded");
        roots
    })
}

/// The certificates of a PEM bundle (error: none, or one that does not parse).
pub fn parse_ca(pem: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_file: {e}"))?;
    if certs.is_empty() {
        return Err("ca_file holds no certificate".into());
    }
    Ok(certs)
}

/// The client for one upstream: TLS only, TCP_NODELAY, pooled keep-alive connections.
pub fn client_for(spec: &UpstreamSpec) -> Result<HttpsClient, String> {
    https_client(
        spec.ca_pem.as_deref(),
        std::time::Duration::from_millis(spec.timeout_ms.min(10_000)),
        true,
    )
}

/// A pooled HTTP/1.1 client trusting the system's and webpki's roots plus `ca_pem`
/// (ring provider, TCP_NODELAY); `https_only` refuses plain http URLs.
pub fn https_client(
    ca_pem: Option<&str>,
    connect_timeout: std::time::Duration,
    https_only: bool,
) -> Result<HttpsClient, String> {
    let mut roots = base_roots().clone();
    if let Some(pem) = ca_pem {
        for c in parse_ca(pem)? {
            roots
                .add(c)
                .map_err(|e| format!("ca_file: a certificate is not usable: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let builder = if https_only {
        builder.https_only()
    } else {
        builder.https_or_http()
    };
    let https = builder.enable_http1().wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https),
    )
}

/// What the cache knows of one (tenant, name): the upstream in force, or that there is none.
type Cached = Option<Arc<Live>>;

/// Where an agent finds the TLS inspection CA (with the system roots after it).
pub const INSPECT_BUNDLE_IN_CONTAINER: &str = "/run/agenfleet/ca.pem";
/// Its name in the agent's gateway directory.
pub const INSPECT_BUNDLE_FILE: &str = "ca.pem";

/// A stored row: its view and the sealed key.
struct Row {
    view: UpstreamView,
    removed: bool,
    key_id: u64,
    sealed: Vec<u8>,
}

pub struct Upstreams {
    store: Store,
    vault: Arc<Vault>,
    /// (tenant, name) → the one in force; filled on first use, replaced on every change.
    live: RwLock<HashMap<(String, String), Cached>>,
    pub meter: meter::Meter,
    /// The TLS inspection CA, once made or loaded.
    inspect: std::sync::Mutex<Option<Arc<inspect::InspectCa>>>,
}

impl Upstreams {
    pub fn new(store: Store, vault: Arc<Vault>) -> Upstreams {
        Upstreams {
            store,
            vault,
            live: RwLock::new(HashMap::new()),
            meter: meter::Meter::default(),
            inspect: std::sync::Mutex::new(None),
        }
    }

    fn rows(&self, tenant: &str, name: Option<&str>) -> Result<Vec<Row>, UpstreamError> {
        let rows = self.store.tenant(tenant).with(|c| {
            let mut st = c.prepare(
                "SELECT name, version, spec_json, key_version, key_id, sealed, value_hmac, removed, created_ms, author, note
                 FROM t_upstreams WHERE (?1 IS NULL OR name = ?1) ORDER BY name, version",
            )?;
            let rows = st
                .query_map(params![name], |r| {
                    Ok((
                        r.get::<_, String>(2)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, u32>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, String>(9)?,
                        r.get::<_, String>(10)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(
                |(
                    json,
                    version,
                    key_version,
                    key_id,
                    sealed,
                    hmac,
                    removed,
                    created,
                    author,
                    note,
                )| {
                    let spec: UpstreamSpec = serde_json::from_str(&json)
                        .map_err(|e| UpstreamError::Store(format!("stored upstream: {e}")))?;
                    Ok(Row {
                        view: UpstreamView {
                            spec,
                            version,
                            key_version,
                            key_hmac: hmac,
                            created_ms: created as u64,
                            author,
                            note,
                        },
                        removed: removed != 0,
                        key_id: key_id as u64,
                        sealed,
                    })
                },
            )
            .collect()
    }

    /// The latest row of each name in the tenant (removals included).
    fn latest(&self, tenant: &str, name: Option<&str>) -> Result<Vec<Row>, UpstreamError> {
        let mut out: Vec<Row> = Vec::new();
        for r in self.rows(tenant, name)? {
            match out.last_mut() {
                Some(last) if last.view.spec.name == r.view.spec.name => *last = r,
                _ => out.push(r),
            }
        }
        Ok(out)
    }

    /// The ones in force in `tenant`.
    pub fn list(&self, tenant: &str) -> Result<Vec<UpstreamView>, UpstreamError> {
        Ok(self
            .latest(tenant, None)?
            .into_iter()
            .filter(|r| !r.removed)
            .map(|r| r.view)
            .collect())
    }

    /// Every version of one name.
    pub fn history(&self, tenant: &str, name: &str) -> Result<Vec<UpstreamView>, UpstreamError> {
        let rows = self.rows(tenant, Some(name))?;
        if rows.is_empty() {
            return Err(UpstreamError::NotFound(format!(
                "tenant {tenant} has no provider or connection named `{name}`"
            )));
        }
        Ok(rows.into_iter().map(|r| r.view).collect())
    }

    /// The one in force named `name` in `tenant`, with its client (None: there is none).
    pub fn get(&self, tenant: &str, name: &str) -> Result<Option<Arc<Live>>, UpstreamError> {
        let k = (tenant.to_string(), name.to_string());
        if let Some(l) = self.live.read().unwrap_or_else(|p| p.into_inner()).get(&k) {
            return Ok(l.clone());
        }
        let row = self
            .latest(tenant, Some(name))?
            .pop()
            .filter(|r| !r.removed);
        let live = match row {
            Some(r) => Some(Arc::new(Live {
                client: client_for(&r.view.spec).map_err(UpstreamError::Invalid)?,
                view: r.view,
                key_id: r.key_id,
                sealed: r.sealed,
            })),
            None => None,
        };
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, live.clone());
        Ok(live)
    }

    /// The key of `live`, opened for one call.
    pub fn key(&self, live: &Live) -> Result<SecretValue, VaultError> {
        let s = &live.view.spec;
        self.vault.open_value(
            live.key_id,
            &live.sealed,
            &aad(&s.tenant, &s.name, live.view.key_version),
            &format!("the key of {} {}/{}", s.class, s.tenant, s.name),
        )
    }

    fn forget(&self, tenant: &str, name: &str) {
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(tenant.to_string(), name.to_string()));
    }

    /// Checks a spec against the tenant's others: fallbacks name providers of the same
    /// kind that are in force; a name is one class only.
    fn check_against(&self, spec: &UpstreamSpec, others: &[Row]) -> Result<(), UpstreamError> {
        for f in &spec.fallbacks {
            match others.iter().find(|r| &r.view.spec.name == f && !r.removed) {
                None => {
                    return Err(UpstreamError::Invalid(format!(
                        "fallback `{f}`: tenant {} has no provider of that name",
                        spec.tenant
                    )))
                }
                Some(r) if r.view.spec.class != UpstreamClass::Provider => {
                    return Err(UpstreamError::Invalid(format!(
                        "fallback `{f}` is a connection, not a provider"
                    )))
                }
                Some(r) if r.view.spec.kind != spec.kind => {
                    return Err(UpstreamError::Invalid(format!(
                        "fallback `{f}` is a {} provider and `{}` is {}: a request in one vendor's shape cannot go to the other",
                        r.view.spec.kind, spec.name, spec.kind
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(pem) = &spec.ca_pem {
            parse_ca(pem).map_err(UpstreamError::Invalid)?;
        }
        Ok(())
    }

    /// Adds (`create`) or changes one; `key` None keeps the current key.
    pub fn put(
        &self,
        spec: UpstreamSpec,
        key: Option<&SecretValue>,
        create: bool,
        author: &str,
        note: &str,
    ) -> Result<UpstreamView, UpstreamError> {
        spec.validate().map_err(UpstreamError::Invalid)?;
        let (tenant, name) = (spec.tenant.clone(), spec.name.clone());
        let latest = self.latest(&tenant, None)?;
        let current = latest.iter().find(|r| r.view.spec.name == name);
        let in_force = current.filter(|r| !r.removed);
        match (create, in_force) {
            (true, Some(r)) => {
                return Err(UpstreamError::Exists(format!(
                    "tenant {tenant} already has a {} named `{name}`; change it with `{} set`",
                    r.view.spec.class,
                    r.view.spec.class.route()
                )))
            }
            (false, None) => {
                return Err(UpstreamError::NotFound(format!(
                    "tenant {tenant} has no {} named `{name}`; add it first",
                    spec.class
                )))
            }
            (false, Some(r)) if r.view.spec.class != spec.class => {
                return Err(UpstreamError::Invalid(format!(
                    "`{name}` is a {}, not a {}",
                    r.view.spec.class, spec.class
                )))
            }
            _ => {}
        }
        if create && key.is_none() {
            return Err(UpstreamError::Invalid(format!(
                "a new {} needs its key",
                spec.class
            )));
        }
        self.check_against(&spec, &latest)?;
        let version = current.map_or(1, |r| r.view.version + 1);
        let (key_version, key_id, sealed, hmac) = match (key, in_force) {
            (Some(k), _) => {
                let kv = current.map_or(1, |r| r.view.key_version + 1);
                let (id, sealed, hmac) = self.vault.seal_value(k, &aad(&tenant, &name, kv))?;
                (kv, id, sealed, hmac)
            }
            (None, Some(r)) => (
                r.view.key_version,
                r.key_id,
                r.sealed.clone(),
                r.view.key_hmac.clone(),
            ),
            (None, None) => unreachable_key(&spec)?,
        };
        let json = serde_json::to_string(&spec).map_err(|e| UpstreamError::Store(e.to_string()))?;
        let now = now_ms();
        self.store.tenant(&tenant).with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR IGNORE INTO t_tenants (id, created_at_ms) VALUES (?1, ?2)",
                params![tenant, now as i64],
            )?;
            tx.execute(
                "INSERT INTO t_upstreams (name, version, class, spec_json, key_version, key_id, sealed, value_hmac, removed, created_ms, author, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11)",
                params![name, version, spec.class.as_str(), json, key_version, key_id as i64, sealed, hmac, now as i64, author, note],
            )?;
            tx.commit()
        })?;
        self.forget(&tenant, &name);
        Ok(UpstreamView {
            spec,
            version,
            key_version,
            key_hmac: hmac,
            created_ms: now,
            author: author.into(),
            note: note.into(),
        })
    }

    /// Removes one (a version marked removed); refused while another provider falls back
    /// to it.
    pub fn remove(
        &self,
        class: UpstreamClass,
        tenant: &str,
        name: &str,
        author: &str,
    ) -> Result<UpstreamView, UpstreamError> {
        let latest = self.latest(tenant, None)?;
        let Some(cur) = latest
            .iter()
            .find(|r| r.view.spec.name == name && !r.removed && r.view.spec.class == class)
        else {
            return Err(UpstreamError::NotFound(format!(
                "tenant {tenant} has no {class} named `{name}`"
            )));
        };
        if let Some(r) = latest
            .iter()
            .find(|r| !r.removed && r.view.spec.fallbacks.iter().any(|f| f == name))
        {
            return Err(UpstreamError::Invalid(format!(
                "provider `{}` falls back to `{name}`: change its fallbacks first",
                r.view.spec.name
            )));
        }
        let version = cur.view.version + 1;
        let json = serde_json::to_string(&cur.view.spec)
            .map_err(|e| UpstreamError::Store(e.to_string()))?;
        let now = now_ms();
        self.store.tenant(tenant).with(|c| {
            c.execute(
                "INSERT INTO t_upstreams (name, version, class, spec_json, key_version, key_id, sealed, value_hmac, removed, created_ms, author, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10, 'removed')",
                params![name, version, class.as_str(), json, cur.view.key_version, cur.key_id as i64, cur.sealed, cur.view.key_hmac, now as i64, author],
            )
        })?;
        self.forget(tenant, name);
        let mut view = cur.view.clone();
        view.version = version;
        view.created_ms = now;
        view.author = author.into();
        view.note = "removed".into();
        Ok(view)
    }

    /// The upstream named `name` if it exists in force (for an agent's spec check).
    pub fn exists(&self, tenant: &str, name: &str) -> Result<Option<UpstreamView>, UpstreamError> {
        Ok(self
            .latest(tenant, Some(name))?
            .pop()
            .filter(|r| !r.removed)
            .map(|r| r.view))
    }

    /// Whether one of the agent's connections has its https inspected (the agent then
    /// trusts the daemon's inspection CA, `INSPECT_BUNDLE_IN_CONTAINER`).
    pub fn inspects(&self, tenant: &str, spec: &agenfleet_protocol::AgentSpec) -> bool {
        spec.connections.iter().any(|n| {
            self.exists(tenant, n)
                .ok()
                .flatten()
                .is_some_and(|v| v.spec.tls_inspect)
        })
    }

    /// The variables that tell the agent's program where its providers and connections
    /// are: `AGENFLEET_PROVIDER_<NAME>_BASE_URL` (and `…CONNECTION…`) for each, and where
    /// exactly one bound provider is of a vendor's kind, the variables that vendor's SDK
    /// reads (`OPENAI_BASE_URL` + `OPENAI_API_KEY`, `ANTHROPIC_BASE_URL` +
    /// `ANTHROPIC_API_KEY`) with the placeholder key. An upstream the tenant does not
    /// have (yet) gets its URL — a call then answers 404 naming the problem — but no SDK
    /// variables, since its kind is unknown.
    pub fn env_for(
        &self,
        tenant: &str,
        spec: &agenfleet_protocol::AgentSpec,
    ) -> Result<Vec<(String, String)>, UpstreamError> {
        use agenfleet_protocol::upstream::{base_url_var, LOCAL_API_BASE, PLACEHOLDER_KEY};
        let mut env = Vec::new();
        let mut kinds: HashMap<agenfleet_protocol::UpstreamKind, Vec<String>> = HashMap::new();
        for (class, names) in [
            (UpstreamClass::Provider, &spec.providers),
            (UpstreamClass::Connection, &spec.connections),
        ] {
            for name in names {
                let base = format!("{LOCAL_API_BASE}/{}/{name}", class.route());
                let suffix = if class == UpstreamClass::Provider {
                    "/v1"
                } else {
                    ""
                };
                env.push((base_url_var(class, name), format!("{base}{suffix}")));
                if class == UpstreamClass::Provider {
                    if let Some(v) = self.exists(tenant, name)? {
                        kinds.entry(v.spec.kind).or_default().push(base);
                    }
                }
            }
        }
        let mut sdk: Vec<(String, String)> = Vec::new();
        for (kind, bases) in kinds {
            if let ([base], Some((url_var, key_var, suffix))) = (bases.as_slice(), kind.sdk_vars())
            {
                sdk.push((url_var.to_string(), format!("{base}{suffix}")));
                sdk.push((key_var.to_string(), PLACEHOLDER_KEY.to_string()));
            }
        }
        // An agent whose https to a connection is inspected trusts the daemon's CA (the
        // bundle also holds the system roots, so every other host stays trusted).
        if self.inspects(tenant, spec) {
            for var in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
                sdk.push((var.to_string(), INSPECT_BUNDLE_IN_CONTAINER.to_string()));
            }
        }
        // The spec's own `env` wins: an operator who set one of these meant it.
        sdk.retain(|(k, _)| !spec.env.contains_key(k));
        sdk.sort();
        env.extend(sdk);
        Ok(env)
    }

    /// Forgets every cached upstream and the usage series of `tenant` (it was deleted).
    pub fn forget_tenant(&self, tenant: &str) {
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(t, _), _| t != tenant);
        self.meter.forget_tenant(tenant);
    }
}

/// A change of an upstream not in force without a key: `put` refuses it before this.
fn unreachable_key<T>(spec: &UpstreamSpec) -> Result<T, UpstreamError> {
    Err(UpstreamError::Invalid(format!(
        "{} `{}` needs a key",
        spec.class, spec.name
    )))
}

#[cfg(test)]
mod tests;
