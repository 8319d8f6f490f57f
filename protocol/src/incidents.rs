//! Incidents on the wire: the four parties of the shared responsibility model, severities,
//! the lifecycle (triggered → acknowledged → resolved, and silencing), evidence, escalation
//! steps and delivery attempts; the responsibility matrix as clients see it; the signed
//! webhook (HMAC-SHA256 over timestamp and body) that a receiver checks; and the PagerDuty
//! Events v2 shape of an incident.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Platform,
    ModelProvider,
    ToolProvider,
    Client,
}

impl Party {
    pub const ALL: [Party; 4] = [
        Party::Platform,
        Party::ModelProvider,
        Party::ToolProvider,
        Party::Client,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Party::Platform => "platform",
            Party::ModelProvider => "model_provider",
            Party::ToolProvider => "tool_provider",
            Party::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Party> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// How people call it.
    pub fn label(self) -> &'static str {
        match self {
            Party::Platform => "Platform (AgenFleet)",
            Party::ModelProvider => "Model provider",
            Party::ToolProvider => "Tool provider",
            Party::Client => "Client",
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Critical,
            Severity::Error,
            Severity::Warning,
            Severity::Info,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Triggered,
    Acknowledged,
    Resolved,
}

impl fmt::Display for IncidentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IncidentState::Triggered => "triggered",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        })
    }
}

/// A record that shows what happened: an audit sequence number (a tool-call decision's id
/// is its audit sequence number) and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub seq: u64,
    pub what: String,
}

/// One step of an incident's escalation, fixed when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    /// After this long without acknowledgement…
    pub after_ms: u64,
    /// …this party is notified (again).
    pub notify: Party,
    pub done_ms: Option<u64>,
}

/// One attempt to deliver an incident to a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub route: String,
    pub attempt: u32,
    pub time_ms: u64,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    /// One open incident per key: a crash loop is one incident with a count.
    pub dedup_key: String,
    pub scenario: String,
    /// What broke.
    pub title: String,
    pub summary: String,
    /// Who owns it (after any reassignment).
    pub party: Party,
    pub co_owners: Vec<Party>,
    pub severity: Severity,
    pub state: IncidentState,
    /// What to do next, in plain words.
    pub next_step: String,
    pub tenant: Option<String>,
    pub project: Option<String>,
    pub agent: Option<String>,
    /// Signals folded into this incident.
    pub count: u32,
    pub first_ms: u64,
    pub last_ms: u64,
    pub acked_ms: Option<u64>,
    pub acked_by: Option<String>,
    pub resolved_ms: Option<u64>,
    pub resolved_by: Option<String>,
    /// New signals of this key are counted but not delivered until then.
    pub silenced_until_ms: Option<u64>,
    pub reassigned_from: Option<Party>,
    pub evidence: Vec<Evidence>,
    pub escalation: Vec<EscalationStep>,
    pub deliveries: Vec<Delivery>,
    /// Routes that gave up delivering it (every attempt failed), or `no route for <party>`.
    pub undelivered: Vec<String>,
    /// Who opened it by hand (None: a detector did).
    pub opened_by: Option<String>,
    /// The provider or connection it is about, when it is about one (routes can key on it).
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub connection: Option<String>,
    /// The runs its agent was working on when it was raised (each raise adds its own; the
    /// newest 20): the run a failure happened in.
    #[serde(default)]
    pub runs: Vec<u64>,
}

impl Incident {
    /// An empty client incident (id 0), for asking which routes an incident would take.
    pub fn probe() -> Incident {
        Incident {
            id: 0,
            dedup_key: String::new(),
            scenario: String::new(),
            title: String::new(),
            summary: String::new(),
            party: Party::Client,
            co_owners: Vec::new(),
            severity: Severity::Critical,
            state: IncidentState::Triggered,
            next_step: String::new(),
            tenant: None,
            project: None,
            agent: None,
            count: 0,
            first_ms: 0,
            last_ms: 0,
            acked_ms: None,
            acked_by: None,
            resolved_ms: None,
            resolved_by: None,
            silenced_until_ms: None,
            reassigned_from: None,
            evidence: Vec::new(),
            escalation: Vec::new(),
            deliveries: Vec::new(),
            undelivered: Vec::new(),
            opened_by: None,
            provider: None,
            connection: None,
            runs: Vec::new(),
        }
    }

    /// Time from the first signal to the acknowledgement.
    pub fn time_to_ack_ms(&self) -> Option<u64> {
        self.acked_ms.map(|a| a.saturating_sub(self.first_ms))
    }

    /// The PagerDuty Events v2 action of one of our events: an acknowledgement and a
    /// resolution are theirs; a trigger, an escalation or a reassignment is (re)triggered
    /// under the same dedup key.
    pub fn pagerduty_action(event: &str) -> &'static str {
        match event {
            "acknowledge" => "acknowledge",
            "resolve" => "resolve",
            _ => "trigger",
        }
    }

    /// The PagerDuty Events v2 shape of this incident for `event` (None: its state's).
    pub fn pagerduty_event(&self, routing_key: &str, event: Option<&str>) -> serde_json::Value {
        let action = match (event, self.state) {
            (Some(e), _) => Self::pagerduty_action(e),
            (None, IncidentState::Triggered) => "trigger",
            (None, IncidentState::Acknowledged) => "acknowledge",
            (None, IncidentState::Resolved) => "resolve",
        };
        serde_json::json!({
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": self.dedup_key,
            "payload": {
                "summary": format!("{} — {}", self.title, self.summary),
                "source": self.agent.as_ref().map(|a| format!("{}/{a}", self.tenant.as_deref().unwrap_or(""))).unwrap_or_else(|| "agenfleetd".into()),
                "severity": self.severity.as_str(),
                "timestamp": crate::time::rfc3339(self.first_ms),
                "component": self.scenario,
                "group": self.party.as_str(),
                "class": self.scenario,
                "custom_details": {
                    "incident_id": self.id,
                    "responsible_party": self.party.as_str(),
                    "co_owners": self.co_owners,
                    "next_step": self.next_step,
                    "count": self.count,
                    "tenant": self.tenant,
                    "agent": self.agent,
                    "evidence": self.evidence,
                }
            }
        })
    }
}

impl Incident {
    /// The chat-webhook text of this incident for `event` (Slack, Mattermost, Teams and
    /// most chat tools take `{"text": …}`): party, severity, what broke, the next step and
    /// the command to acknowledge it.
    pub fn chat_text(&self, event: &str) -> String {
        let whom = match (&self.tenant, &self.agent) {
            (Some(t), Some(a)) => format!(" — {t}/{a}"),
            (Some(t), None) => format!(" — tenant {t}"),
            _ => String::new(),
        };
        let head = match event {
            "acknowledge" => format!(
                "Acknowledged by {}",
                self.acked_by.as_deref().unwrap_or("someone")
            ),
            "resolve" => format!(
                "Resolved by {}",
                self.resolved_by.as_deref().unwrap_or("someone")
            ),
            "escalate" => "Still unacknowledged".to_string(),
            "reassign" => format!(
                "Reassigned from {}",
                self.reassigned_from
                    .map(|p| p.label())
                    .unwrap_or("another party")
            ),
            _ => "New incident".to_string(),
        };
        let mut t = format!(
            "[{}] {head}: incident {} for {} — {}{whom}\n{}",
            self.severity.as_str().to_uppercase(),
            self.id,
            self.party.label(),
            self.title,
            self.summary
        );
        if matches!(event, "trigger" | "escalate" | "reassign") {
            t.push_str(&format!(
                "\nNext step: {}\nAcknowledge: agenfleet incidents ack {}",
                self.next_step, self.id
            ));
        }
        t
    }
}

/// A configured route as operators see it (never its secret or its URL's path, which
/// for chat webhooks is a credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub name: String,
    /// A party, or `reviewers` (escalations).
    pub party: String,
    pub tenant: Option<String>,
    pub project: Option<String>,
    pub provider: Option<String>,
    pub connection: Option<String>,
    pub min_severity: Severity,
    /// agenfleet, pagerduty or chat (command routes: `command`).
    pub format: String,
}

/// Where one (party, tenant)'s incidents go: the most specific matching routes (an
/// incident about a provider or a connection may go to a route of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResolution {
    pub party: String,
    pub tenant: Option<String>,
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesReport {
    pub routes: Vec<RouteView>,
    pub resolved: Vec<RouteResolution>,
}

/// A notification waiting in the delivery outbox, or given up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: u64,
    pub route: String,
    /// `incident` or `escalation`.
    pub kind: String,
    pub ref_id: u64,
    pub event: String,
    pub tenant: Option<String>,
    /// `pending` or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    pub last_error: String,
    pub created_ms: u64,
}

/// One scenario of the matrix, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    pub id: String,
    pub title: String,
    /// `seed` (the product document's table) or `agenfleet` (what this system sees).
    pub source: String,
    pub primary: Party,
    pub co_owners: Vec<Party>,
    pub severity: Severity,
    pub signal: String,
    pub next_step: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Area {
    pub name: String,
    pub owner: Party,
}

/// The responsibility matrix and the scenarios in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    pub areas: Vec<Area>,
    pub scenarios: Vec<Scenario>,
}

/// Headers of a signed incident webhook.
pub const SIGNATURE_HEADER: &str = "X-AgenFleet-Signature";
pub const TIMESTAMP_HEADER: &str = "X-AgenFleet-Timestamp";
/// A receiver refuses a request whose timestamp is further than this from its clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// Why a signed webhook request must be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("timestamp `{0}` is not a number of seconds")]
    BadTimestamp(String),
    #[error("timestamp is {0} s away from our clock (at most {MAX_SKEW_SECS} s): a stale or replayed request")]
    Stale(u64),
    #[error(
        "signature does not match the body and timestamp: altered, or signed with another secret"
    )]
    Mismatch,
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp_secs: u64, body: &[u8]) -> String {
    use hmac::Mac;
    // An HMAC key may have any length: `new_from_slice` cannot fail for HMAC-SHA256.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// What a receiver checks: both headers present, the timestamp within `MAX_SKEW_SECS`
/// of `now_secs`, and the signature over exactly this timestamp and body (compared in
/// constant time).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), SignatureError> {
    use hmac::Mac;
    let ts_text = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let sig = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let ts: u64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(ts_text.chars().take(40).collect()))?;
    let skew = now_secs.abs_diff(ts);
    if skew > MAX_SKEW_SECS {
        return Err(SignatureError::Stale(skew));
    }
    let hex = sig
        .trim()
        .strip_prefix("v1=")
        .ok_or(SignatureError::Mismatch)?;
    // Exactly 64 hex digits: anything else is not a signature (found by fuzzing: digits
    // around junk used to be skipped, so junk inside a right signature passed).
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignatureError::Mismatch);
    }
    let given: Vec<u8> = (0..32)
        .filter_map(|i| {
            hex.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_refuses_altered_stale_and_unsigned_requests() {
        let secret = b"s3cret";
        let body = br#"{"incident":1}"#;
        let sig = sign(secret, 1_000_000, body);
        // Junk inside or after a right signature is not a signature.
        for bad in [
            format!("{}\0\0{}", &sig[..20], &sig[20..]),
            format!("{sig}zz"),
            format!("{sig}00"),
            sig[..sig.len() - 1].to_string(),
        ] {
            assert_eq!(
                verify(secret, Some("1000000"), Some(&bad), body, 1_000_100),
                Err(SignatureError::Mismatch),
                "{bad:?}"
            );
        }
        assert!(verify(
            secret,
            Some("1000000"),
            Some(&sig.to_uppercase().replace("V1=", "v1=")),
            body,
            1_000_100
        )
        .is_ok());
        assert!(verify(secret, Some("1000000"), Some(&sig), body, 1_000_100).is_ok());
        assert_eq!(
            verify(
                secret,
                Some("1000000"),
                Some(&sig),
                br#"{"incident":2}"#,
                1_000_100
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1000000"), Some(&sig), body, 1_000_100),
            Err(SignatureError::Mismatch)
        );
        // The same signature with another timestamp (a replay with a fresh clock) fails.
        assert_eq!(
            verify(secret, Some("1000200"), Some(&sig), body, 1_000_200),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                secret,
                Some("1000000"),
                Some(&sig),
                body,
                1_000_000 + MAX_SKEW_SECS + 1
            ),
            Err(SignatureError::Stale(MAX_SKEW_SECS + 1))
        );
        assert_eq!(
            verify(secret, None, Some(&sig), body, 1_000_000),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert!(matches!(
            verify(secret, Some("soon"), Some(&sig), body, 1_000_000),
            Err(SignatureError::BadTimestamp(_))
        ));
        let e = verify(secret, Some("1000000"), Some(&sig), body, 2_000_000).unwrap_err();
        assert!(e.to_string().contains("stale or replayed"), "{e}");
    }
}
