//! Triggers on the wire: what starts an agent's runs besides a person — a signed inbound
//! webhook (a subscription with its own automation token and signing secret) or a
//! schedule (a cron expression, UTC). The daemon keeps them (`daemon/src/triggers`); the
//! CLI adds, lists, shows, revokes them and rotates a webhook's secret.
//!
//! A webhook request carries `Authorization: Bearer <token>`, `X-AgenFleet-Timestamp`
//! (Unix seconds) and `X-AgenFleet-Signature: sha256=<hex HMAC-SHA256(secret,
//! "<timestamp>.<raw body>")>`; `signature` here is that computation, for senders written
//! in Rust and for the tests.

use serde::{Deserialize, Serialize};

/// The header naming the request's time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-agenfleet-timestamp";
/// The header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-agenfleet-signature";
/// Where a subscription's requests go: `POST /v1/hooks/<id>`.
pub const HOOK_PATH: &str = "/v1/hooks/";
/// A webhook's default rate: runs a minute it may start.
pub const DEFAULT_RATE_PER_MIN: u32 = 60;
/// How long a rotated-out secret still verifies, by default.
pub const DEFAULT_OVERLAP_SECS: u64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    Webhook,
    Schedule,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Webhook => "webhook",
            TriggerKind::Schedule => "schedule",
        }
    }

    pub fn parse(s: &str) -> Option<TriggerKind> {
        match s {
            "webhook" => Some(TriggerKind::Webhook),
            "schedule" => Some(TriggerKind::Schedule),
            _ => None,
        }
    }
}

/// What a schedule does about due times that passed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatchUp {
    /// Missed times are skipped (recorded); the next run is at the next due time.
    #[default]
    Skip,
    /// One run is started at once for all the missed times (recorded).
    Once,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
        }
    }

    pub fn parse(s: &str) -> Option<CatchUp> {
        match s {
            "skip" => Some(CatchUp::Skip),
            "once" => Some(CatchUp::Once),
            _ => None,
        }
    }
}

/// What `triggers add` asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TriggerNew {
    Webhook {
        /// Runs a minute the subscription may start (0: the default, 60).
        rate_per_min: u32,
    },
    Schedule {
        /// Five fields (minute hour day month weekday), or six with seconds first; UTC.
        cron: String,
        /// The input of each run (JSON text).
        input_json: String,
        catch_up: CatchUp,
        /// Start a run while the previous one of this trigger is still open.
        overlap: bool,
    },
}

/// One trigger as the CLI shows it (never its token or secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerView {
    pub id: String,
    pub tenant: String,
    pub project: String,
    pub agent: String,
    pub kind: TriggerKind,
    pub created_by: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
    /// Webhooks: runs a minute.
    pub rate_per_min: u32,
    /// Webhooks: when the secret was last rotated, and until when the one before verifies.
    pub rotated_ms: Option<u64>,
    pub old_secret_until_ms: Option<u64>,
    /// Schedules.
    pub cron: Option<String>,
    pub input_json: String,
    pub catch_up: CatchUp,
    pub overlap: bool,
    /// Schedules: the last due time handled (a run started, skipped or missed), and the
    /// next one.
    pub last_due_ms: Option<u64>,
    pub next_due_ms: Option<u64>,
}

impl TriggerView {
    /// `tenant/agent`.
    pub fn agent_ref(&self) -> String {
        format!("{}/{}", self.tenant, self.agent)
    }

    /// The request path of a webhook (`/v1/hooks/<id>`).
    pub fn path(&self) -> String {
        format!("{HOOK_PATH}{}", self.id)
    }
}

/// What `triggers add --webhook` and `triggers rotate-secret` show once: nothing keeps the
/// token or the secret in the clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerCreated {
    pub trigger: TriggerView,
    /// The request path (`/v1/hooks/<id>`), and the URL when the daemon's listener is on.
    pub path: String,
    pub url: Option<String>,
    /// The automation token (webhooks; shown when added, not when the secret rotates).
    pub token: Option<crate::SecretValue>,
    /// The signing secret (webhooks).
    pub secret: Option<crate::SecretValue>,
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: what a sender puts in
/// `X-AgenFleet-Signature`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex_lower(&hmac_sha256(secret, timestamp, body))
    )
}

/// The raw HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn hmac_sha256(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC takes a key of any length.
    let mut m = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable_key(),
    };
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

#[cold]
fn unreachable_key() -> ! {
    // `Hmac::new_from_slice` accepts every key length; this is never reached.
    panic!("HMAC rejected a key")
}

fn hex_lower(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = signature(b"Jefe", "what do ya want", b" for nothing?");
        // The data is "<timestamp>.<body>": "what do ya want" + "." + " for nothing?"
        // differs from the RFC's by the dot, so compare with a direct computation.
        let direct = {
            use hmac::Mac;
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
            m.update(b"what do ya want. for nothing?");
            m.finalize().into_bytes()
        };
        assert_eq!(s, format!("sha256={}", hex_lower(&direct)));
        let rfc = {
            use hmac::Mac;
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
            m.update(b"what do ya want for nothing?");
            hex_lower(&m.finalize().into_bytes())
        };
        assert_eq!(
            rfc,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
