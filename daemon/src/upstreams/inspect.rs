//! The CA with which the egress proxy terminates an agent's https to a connection marked
//! `tls_inspect`: made once per daemon installation (ECDSA P-256, ten years), its key
//! sealed by the vault (associated data names the instance) in the `meta` table beside its
//! certificate, and rebuilt from them at each start — the subject and key are the same, so
//! a leaf signed by the rebuilt CA verifies against the certificate agents were given.
//! Leaves (one per host, 30 days) are made on first use and kept in memory. The bundle
//! agents get (`/run/agenfleet/ca.pem`) is this CA followed by the host's system roots, so
//! an `SSL_CERT_FILE` that points at it still trusts every other https host.

use super::{UpstreamError, Upstreams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const META_KEY: &str = "inspect_ca";

/// The CA in memory: what signs leaves, and what agents are given.
pub struct InspectCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// This CA's certificate, then the host's system roots (PEM).
    pub bundle_pem: String,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    cert_pem: String,
    not_before: i64,
    not_after: i64,
    serial_hex: String,
    key_id: u64,
    sealed_key_hex: String,
}

fn ca_params(
    instance: &str,
    not_before: i64,
    not_after: i64,
    serial: &[u8],
) -> Result<CertificateParams, UpstreamError> {
    let bad = |e: rcgen::Error| UpstreamError::Store(format!("inspection CA: {e}"));
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(
        DnType::CommonName,
        format!("AgenFleet TLS inspection CA {instance}"),
    );
    p.distinguished_name
        .push(DnType::OrganizationName, "AgenFleet");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time_at(not_before)?;
    p.not_after = time_at(not_after)?;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    Ok(p)
}

fn time_at(unix: i64) -> Result<time::OffsetDateTime, UpstreamError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| UpstreamError::Store(format!("inspection CA time: {e}")))
}

/// The host's system roots as PEM (what `SSL_CERT_FILE` would otherwise have trusted).
fn system_roots_pem() -> String {
    use base64::Engine;
    let mut out = String::new();
    for c in rustls_native_certs::load_native_certs().certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

impl InspectCa {
    /// A server configuration presenting a certificate for `host` (cached per host).
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, UpstreamError> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = leaves.get(host) {
            return Ok(c.clone());
        }
        let bad = |e: rcgen::Error| {
            UpstreamError::Store(format!("inspection certificate for {host}: {e}"))
        };
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        p.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into().map_err(bad)?),
        }];
        p.distinguished_name.push(DnType::CommonName, host);
        let now = agenfleet_protocol::now_ms() as i64 / 1000;
        p.not_before = time_at(now - 3600)?;
        p.not_after = time_at(now + 30 * 86_400)?;
        let key = KeyPair::generate().map_err(bad)?;
        let cert = p.signed_by(&key, &self.cert, &self.key).map_err(bad)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Store(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )),
        )
        .map_err(|e| UpstreamError::Store(format!("TLS: {e}")))?;
        let config = Arc::new(config);
        leaves.insert(host.to_string(), config.clone());
        Ok(config)
    }
}

impl Upstreams {
    /// The inspection CA, made (and stored) on first use; needs the vault unsealed.
    pub fn inspect_ca(&self, instance: &str) -> Result<Arc<InspectCa>, UpstreamError> {
        let mut slot = self.inspect.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ca) = slot.as_ref() {
            return Ok(ca.clone());
        }
        let aad = format!("agenfleet|inspect-ca|{instance}").into_bytes();
        let stored: Option<String> = self.store.with(|c| {
            c.query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![META_KEY],
                |r| r.get(0),
            )
            .optional()
        })?;
        let bad = |e: rcgen::Error| UpstreamError::Store(format!("inspection CA: {e}"));
        let ca = match stored {
            Some(json) => {
                let s: Stored = serde_json::from_str(&json)
                    .map_err(|e| UpstreamError::Store(format!("inspection CA: {e}")))?;
                let sealed = hex::decode(&s.sealed_key_hex)
                    .map_err(|e| UpstreamError::Store(format!("inspection CA: {e}")))?;
                let key_pem =
                    self.vault
                        .open_value(s.key_id, &sealed, &aad, "the inspection CA's key")?;
                let key =
                    KeyPair::from_pem(&String::from_utf8_lossy(key_pem.expose())).map_err(bad)?;
                let serial = hex::decode(&s.serial_hex)
                    .map_err(|e| UpstreamError::Store(format!("inspection CA: {e}")))?;
                let cert = ca_params(instance, s.not_before, s.not_after, &serial)?
                    .self_signed(&key)
                    .map_err(bad)?;
                InspectCa {
                    bundle_pem: format!("{}{}", s.cert_pem, system_roots_pem()),
                    cert,
                    key,
                    leaves: Mutex::new(HashMap::new()),
                }
            }
            None => {
                let key = KeyPair::generate().map_err(bad)?;
                let now = agenfleet_protocol::now_ms() as i64 / 1000;
                let (nb, na) = (now - 3600, now + 10 * 365 * 86_400);
                let serial: [u8; 16] = rand::random::<[u8; 16]>().map(|b| b & 0x7f);
                let cert = ca_params(instance, nb, na, &serial)?
                    .self_signed(&key)
                    .map_err(bad)?;
                let key_pem =
                    agenfleet_protocol::SecretValue::new(key.serialize_pem().into_bytes());
                let (key_id, sealed, _) = self.vault.seal_value(&key_pem, &aad)?;
                let s = Stored {
                    cert_pem: cert.pem(),
                    not_before: nb,
                    not_after: na,
                    serial_hex: hex::encode(serial),
                    key_id,
                    sealed_key_hex: hex::encode(sealed),
                };
                let json =
                    serde_json::to_string(&s).map_err(|e| UpstreamError::Store(e.to_string()))?;
                self.store.with(|c| {
                    c.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                        params![META_KEY, json],
                    )
                })?;
                tracing::info!("TLS inspection CA made (its key sealed by the vault)");
                InspectCa {
                    bundle_pem: format!("{}{}", s.cert_pem, system_roots_pem()),
                    cert,
                    key,
                    leaves: Mutex::new(HashMap::new()),
                }
            }
        };
        let ca = Arc::new(ca);
        *slot = Some(ca.clone());
        Ok(ca)
    }

    /// The connection bound to `spec` whose base URL is `host:port` and which is marked
    /// `tls_inspect` (None: a plain tunnel).
    pub fn inspected(
        &self,
        tenant: &str,
        spec: &agenfleet_protocol::AgentSpec,
        host: &str,
        port: u16,
    ) -> Option<Arc<super::Live>> {
        spec.connections.iter().find_map(|name| {
            let live = self.get(tenant, name).ok().flatten()?;
            let s = &live.view.spec;
            (s.tls_inspect && s.authority().is_some_and(|(h, p)| h == host && p == port))
                .then_some(live)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuilt_ca_signs_leaves_that_verify_against_the_first_certificate() {
        crate::keyring::join_for_this_thread().expect("a session keyring");
        let store = crate::store::Store::open_in_memory().unwrap();
        let vault = Arc::new(crate::vault::Vault::open(
            store.clone(),
            format!("test{:08x}", rand::random::<u32>()),
        ));
        vault.init().unwrap();
        let first = Upstreams::new(store.clone(), vault.clone());
        let ca = first.inspect_ca("i1").unwrap();
        let given = ca.bundle_pem.clone();
        // A new daemon on the same store: same CA, from the sealed key.
        let again = Upstreams::new(store, vault);
        let ca2 = again.inspect_ca("i1").unwrap();
        assert_eq!(ca2.bundle_pem, given);
        let config = ca2.server_config("127.0.0.1").unwrap();
        // The leaf is accepted by a client that trusts only the first certificate.
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::upstreams::parse_ca(&given)
            .unwrap()
            .into_iter()
            .take(1)
        {
            roots.add(c).unwrap();
        }
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        let mut c = rustls::ClientConnection::new(client, "127.0.0.1".try_into().unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(config).unwrap();
        // Drive the handshake in memory.
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).unwrap();
            }
            c.read_tls(&mut back.as_slice()).unwrap();
            c.process_new_packets()
                .expect("the client accepts the leaf");
            if !c.is_handshaking() && !s.is_handshaking() {
                return;
            }
        }
        panic!("the handshake did not finish");
    }
}
