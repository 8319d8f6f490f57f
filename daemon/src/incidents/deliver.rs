//! Routes and one delivery attempt. A route is a webhook (http or https through rustls,
//! system and webpki roots plus its own `ca_file`; IPv6 literals work) or a local command
//! fed the event on stdin. A webhook body is our JSON, PagerDuty's Events v2 or a chat
//! text, signed (when the route has a secret) with HMAC-SHA256 over the timestamp and the
//! body. Which routes an incident goes to is `pick`: the matching routes of its party, the
//! most specific ones. Retrying and persistence are the outbox's (`outbox`).

use crate::config::RouteConfig;
use crate::upstreams::HttpsClient;
use agenfleet_protocol::incidents::{
    sign, Incident, Party, RouteView, Severity, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use agenfleet_protocol::policy::EscalationView;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// An undelivered event is given up after a day of retries (or `max_attempts`, if set).
pub const GIVE_UP_MS: u64 = 86_400_000;

pub enum Target {
    Webhook {
        url: url::Url,
        /// None: sent unsigned (a PagerDuty or chat route without a secret).
        secret: Option<zeroize::Zeroizing<Vec<u8>>>,
        client: Box<HttpsClient>,
    },
    Command(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Agenfleet,
    PagerDuty,
    Chat,
}

/// Whom a route serves: one party's incidents, or the reviewers of escalations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Party(Party),
    Reviewers,
}

/// A configured route, its secret loaded.
pub struct Route {
    /// How it is named in delivery records (the config's `name`, or `client webhook
    /// https://…`); never the secret. Unique: the outbox keys its rows on it.
    pub name: String,
    pub audience: Audience,
    pub tenant: Option<String>,
    pub project: Option<String>,
    pub provider: Option<String>,
    pub connection: Option<String>,
    /// Incidents less severe than this are not sent here.
    pub min_severity: Severity,
    pub target: Target,
    pub format: Format,
    pub routing_key: String,
    /// 0: no limit but `GIVE_UP_MS`.
    pub max_attempts: u32,
}

fn none_if_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Route {
    pub fn from_config(c: &RouteConfig) -> Result<Route, String> {
        c.check()?;
        let audience = if c.for_reviewers() {
            Audience::Reviewers
        } else {
            Audience::Party(Party::parse(&c.party).ok_or("unknown party")?)
        };
        let webhook = c.webhook_url();
        let target = if webhook.is_empty() {
            Target::Command(c.command.clone())
        } else {
            let url = url::Url::parse(webhook).map_err(|e| e.to_string())?;
            let secret = if c.secret_file.as_os_str().is_empty() {
                None
            } else {
                let raw = crate::config::read_bounded(&c.secret_file)
                    .map_err(|e| format!("cannot read {}: {e}", c.secret_file.display()))?;
                let secret: Vec<u8> = String::from_utf8_lossy(&raw).trim().as_bytes().to_vec();
                Some(zeroize::Zeroizing::new(secret))
            };
            let ca = if c.ca_file.as_os_str().is_empty() {
                None
            } else {
                Some(
                    crate::config::read_text_bounded(&c.ca_file)
                        .map_err(|e| format!("cannot read ca_file {}: {e}", c.ca_file.display()))?,
                )
            };
            let client = crate::upstreams::https_client(ca.as_deref(), CONNECT_TIMEOUT, false)?;
            Target::Webhook {
                url,
                secret,
                client: Box::new(client),
            }
        };
        let name = if !c.name.is_empty() {
            c.name.clone()
        } else {
            let who = match audience {
                Audience::Party(p) => p.as_str().to_string(),
                Audience::Reviewers => "reviewers".into(),
            };
            let mut scope = String::new();
            for v in [&c.tenant, &c.project, &c.provider, &c.connection] {
                if !v.is_empty() {
                    scope.push('/');
                    scope.push_str(v);
                }
            }
            // Only the origin: a chat webhook's path is its credential.
            match &target {
                Target::Webhook { url, .. } => {
                    format!(
                        "{who}{scope} webhook {}",
                        url.origin().ascii_serialization()
                    )
                }
                Target::Command(cmd) => format!(
                    "{who}{scope} command {}",
                    cmd.first().cloned().unwrap_or_default()
                ),
            }
        };
        Ok(Route {
            name,
            audience,
            tenant: none_if_empty(&c.tenant),
            project: none_if_empty(&c.project),
            provider: none_if_empty(&c.provider),
            connection: none_if_empty(&c.connection),
            min_severity: Severity::parse(&c.min_severity).unwrap_or(Severity::Info),
            target,
            format: match c.format.as_str() {
                "pagerduty" => Format::PagerDuty,
                "chat" => Format::Chat,
                _ => Format::Agenfleet,
            },
            routing_key: c.routing_key.clone(),
            max_attempts: c.max_attempts,
        })
    }

    /// How operators see it.
    pub fn view(&self) -> RouteView {
        RouteView {
            name: self.name.clone(),
            party: match self.audience {
                Audience::Party(p) => p.as_str().into(),
                Audience::Reviewers => "reviewers".into(),
            },
            tenant: self.tenant.clone(),
            project: self.project.clone(),
            provider: self.provider.clone(),
            connection: self.connection.clone(),
            min_severity: self.min_severity,
            format: match (&self.target, self.format) {
                (Target::Command(_), _) => "command".into(),
                (_, Format::Agenfleet) => "agenfleet".into(),
                (_, Format::PagerDuty) => "pagerduty".into(),
                (_, Format::Chat) => "chat".into(),
            },
        }
    }

    /// Whether this route takes `party`'s incident `inc`; answers how specific the match
    /// is (higher wins): a provider or connection counts 2, a tenant 1.
    pub fn matches(&self, party: Party, inc: &Incident) -> Option<u8> {
        if self.audience != Audience::Party(party) || inc.severity > self.min_severity {
            return None;
        }
        let mut score = 0;
        if let Some(t) = &self.tenant {
            if inc.tenant.as_ref() != Some(t) {
                return None;
            }
            score += 1;
        }
        for (want, got) in [
            (&self.provider, &inc.provider),
            (&self.connection, &inc.connection),
        ] {
            if let Some(w) = want {
                if got.as_ref() != Some(w) {
                    return None;
                }
                score += 2;
            }
        }
        Some(score)
    }

    /// Whether this route takes escalations of (tenant, project); how specific.
    pub fn matches_review(&self, tenant: &str, project: &str) -> Option<u8> {
        if self.audience != Audience::Reviewers {
            return None;
        }
        let mut score = 0;
        if let Some(t) = &self.tenant {
            if t != tenant {
                return None;
            }
            score += 1;
        }
        if let Some(p) = &self.project {
            if p != project {
                return None;
            }
            score += 1;
        }
        Some(score)
    }

    /// The body sent for `event` (trigger, escalate, acknowledge, resolve, reassign).
    pub fn incident_body(&self, inc: &Incident, event: &str) -> Vec<u8> {
        let v = match self.format {
            Format::PagerDuty => inc.pagerduty_event(&self.routing_key, Some(event)),
            Format::Chat => serde_json::json!({"text": inc.chat_text(event)}),
            Format::Agenfleet => serde_json::json!({"event": event, "incident": inc}),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// The body sent to reviewers for an escalation's `event` (opened, reminder, approved,
    /// denied, timed_out): `who` says who may decide.
    pub fn escalation_body(&self, v: &EscalationView, event: &str, who: &str) -> Vec<u8> {
        let text = escalation_text(v, event, who);
        let key = format!("escalation:{}", v.id);
        let value = match self.format {
            Format::PagerDuty => serde_json::json!({
                "routing_key": self.routing_key,
                "event_action": match event {
                    "opened" | "reminder" => "trigger",
                    _ => "resolve",
                },
                "dedup_key": key,
                "payload": {
                    "summary": text.lines().next().unwrap_or_default(),
                    "source": format!("{}/{}", v.tenant, v.agent),
                    "severity": "warning",
                    "component": v.tool,
                    "group": "reviewers",
                    "class": "escalation",
                    "custom_details": {"text": text, "escalation": v},
                }
            }),
            Format::Chat => serde_json::json!({ "text": text }),
            Format::Agenfleet => serde_json::json!({
                "event": format!("escalation.{event}"),
                "escalation": v,
                "reviewers": who,
                "text": text,
            }),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// One attempt. `Err` says what went wrong (never the secret).
    pub async fn attempt(&self, body: &[u8], env: &[(&str, String)]) -> Result<String, String> {
        match &self.target {
            Target::Webhook {
                url,
                secret,
                client,
            } => post(client, url, secret.as_deref().map(|s| &s[..]), body).await,
            Target::Command(cmd) => run_command(cmd, body, env).await,
        }
    }
}

/// The text a reviewer reads: what the agent wants, why it waits, until when, and the
/// exact commands to decide.
pub fn escalation_text(v: &EscalationView, event: &str, who: &str) -> String {
    let preview: String = v.args_json.chars().take(160).collect();
    let more = if v.args_json.chars().count() > 160 {
        "…"
    } else {
        ""
    };
    let short = crate::policy::escalations::short(&v.request_hash);
    let deadline = agenfleet_protocol::time::rfc3339(v.deadline_ms);
    match event {
        "opened" | "reminder" => format!(
            "{}Escalation {} — {}/{} (project {}) wants to call `{}`; policy {} escalated it: {}\nArguments (sha256 {}): {preview}{more}\nDecide before {deadline} (denied then). Who may decide: {who}.\nApprove: agenfleet escalations approve {} --request {short}\nDeny:    agenfleet escalations deny {} --request {short} --reason \"…\"",
            if event == "reminder" { "Reminder: " } else { "" },
            v.id,
            v.tenant,
            v.agent,
            v.project,
            v.tool,
            v.policies.join(", "),
            v.reason,
            short,
            v.id,
            v.id,
        ),
        _ => format!(
            "Escalation {} — {}/{} `{}`: {}{}",
            v.id,
            v.tenant,
            v.agent,
            v.tool,
            v.state,
            v.reviewer
                .as_ref()
                .map(|r| format!(" by {r}"))
                .unwrap_or_default()
        ),
    }
}

/// The delay before a route's next try after `failures` failures in a row: 1 s doubling,
/// capped at 60 s.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (failures - 1).min(6)).min(Duration::from_secs(60))
}

/// One POST; `Ok` for a 2xx (`HTTP 202`), else what went wrong — a TLS failure says why.
async fn post(
    client: &HttpsClient,
    url: &url::Url,
    secret: Option<&[u8]>,
    body: &[u8],
) -> Result<String, String> {
    let mut req = hyper::Request::post(url.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            format!("agenfleetd/{}", agenfleet_protocol::SOFTWARE_VERSION),
        );
    if let Some(secret) = secret {
        let ts = agenfleet_protocol::now_ms() / 1000;
        req = req
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(secret, ts, body));
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("cannot make the request: {e}"))?;
    let where_ = url.host_str().unwrap_or("?").to_string();
    let exchange = async {
        let res = client
            .request(req)
            .await
            .map_err(|e| crate::upstreams::call::reason(&e))?;
        let status = res.status().as_u16();
        // Read (and drop) the answer so the connection can be reused.
        let _ = res.into_body().collect().await;
        Ok::<u16, String>(status)
    };
    let status = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{where_} did not answer within {ANSWER_TIMEOUT:?}"))??;
    if (200..300).contains(&status) {
        Ok(format!("HTTP {status}"))
    } else {
        Err(format!("HTTP {status}"))
    }
}

async fn run_command(
    cmd: &[String],
    body: &[u8],
    env: &[(&str, String)],
) -> Result<String, String> {
    let (prog, args) = cmd.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(prog);
    child
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        child.env(k, v);
    }
    let mut child = child
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body).await;
    }
    let status = tokio::time::timeout(ANSWER_TIMEOUT, child.wait())
        .await
        .map_err(|_| format!("{prog} did not finish within {ANSWER_TIMEOUT:?}"))?
        .map_err(|e| format!("{prog}: {e}"))?;
    if status.success() {
        Ok("exit 0".into())
    } else {
        Err(format!("{prog} exited with {status}"))
    }
}

/// The routes `party`'s incident goes to: of those that match, the most specific.
pub fn pick(routes: &[Route], party: Party, inc: &Incident) -> Vec<usize> {
    most_specific(routes, |r| r.matches(party, inc))
}

/// The reviewers' routes for escalations of (tenant, project): the most specific.
pub fn pick_review(routes: &[Route], tenant: &str, project: &str) -> Vec<usize> {
    most_specific(routes, |r| r.matches_review(tenant, project))
}

/// The indexes of the routes `score` matches with the highest score (all of those).
fn most_specific(routes: &[Route], score: impl Fn(&Route) -> Option<u8>) -> Vec<usize> {
    let scored: Vec<(usize, u8)> = routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| score(r).map(|s| (i, s)))
        .collect();
    let best = scored.iter().map(|(_, s)| *s).max();
    scored
        .into_iter()
        .filter(|(_, s)| Some(*s) == best)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let d: Vec<u64> = (0..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(d, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
    }

    fn route(toml_text: &str) -> Route {
        let c: RouteConfig = toml::from_str(toml_text).expect("route config");
        Route::from_config(&c).expect("a valid route")
    }

    fn incident(tenant: Option<&str>, provider: Option<&str>, severity: Severity) -> Incident {
        let mut i = Incident::probe();
        i.id = 1;
        i.dedup_key = "k".into();
        i.next_step = "n".into();
        i.tenant = tenant.map(str::to_string);
        i.provider = provider.map(str::to_string);
        i.severity = severity;
        i
    }

    #[test]
    fn the_most_specific_matching_route_wins() {
        let routes = vec![
            route("name = \"all\"\nparty = \"client\"\ncommand = [\"true\"]"),
            route("name = \"acme\"\nparty = \"client\"\ntenant = \"acme\"\ncommand = [\"true\"]"),
            route("name = \"acme-openai\"\nparty = \"client\"\ntenant = \"acme\"\nprovider = \"openai\"\ncommand = [\"true\"]"),
            route("name = \"pages\"\nparty = \"client\"\nmin_severity = \"critical\"\ncommand = [\"true\"]"),
            route("name = \"pages2\"\nparty = \"client\"\nmin_severity = \"critical\"\ncommand = [\"true\"]"),
            route("name = \"platform\"\nparty = \"platform\"\ncommand = [\"true\"]"),
        ];
        let names = |idx: Vec<usize>| -> Vec<&str> {
            idx.into_iter().map(|i| routes[i].name.as_str()).collect()
        };
        let e = Severity::Error;
        assert_eq!(
            names(pick(&routes, Party::Client, &incident(None, None, e))),
            ["all"]
        );
        assert_eq!(
            names(pick(
                &routes,
                Party::Client,
                &incident(Some("acme"), None, e)
            )),
            ["acme"]
        );
        assert_eq!(
            names(pick(
                &routes,
                Party::Client,
                &incident(Some("acme"), Some("openai"), e)
            )),
            ["acme-openai"]
        );
        assert_eq!(
            names(pick(
                &routes,
                Party::Client,
                &incident(Some("beta"), Some("openai"), e)
            )),
            ["all"],
            "another tenant's provider route does not match"
        );
        assert_eq!(
            names(pick(
                &routes,
                Party::Client,
                &incident(None, None, Severity::Critical)
            )),
            ["all", "pages", "pages2"],
            "equally specific routes all get it"
        );
        assert_eq!(
            names(pick(&routes, Party::Platform, &incident(None, None, e))),
            ["platform"]
        );
        assert!(pick(&routes, Party::ModelProvider, &incident(None, None, e)).is_empty());
    }

    #[test]
    fn shapes_carry_what_their_receivers_need() {
        let pd = route("party = \"client\"\nformat = \"pagerduty\"\nrouting_key = \"R1\"");
        assert!(
            matches!(&pd.target, Target::Webhook { url, .. } if url.as_str() == crate::config::PAGERDUTY_ENQUEUE)
        );
        let mut inc = incident(Some("acme"), None, Severity::Error);
        inc.state = agenfleet_protocol::incidents::IncidentState::Acknowledged;
        let b: serde_json::Value =
            serde_json::from_slice(&pd.incident_body(&inc, "trigger")).unwrap();
        assert_eq!(
            b["event_action"], "trigger",
            "the event's action, not the state's"
        );
        assert_eq!(b["dedup_key"], "k");
        assert_eq!(b["routing_key"], "R1");
        let b: serde_json::Value =
            serde_json::from_slice(&pd.incident_body(&inc, "resolve")).unwrap();
        assert_eq!(b["event_action"], "resolve");
        let chat =
            route("party = \"client\"\nformat = \"chat\"\nwebhook = \"https://[::1]:8443/hook\"");
        let b: serde_json::Value =
            serde_json::from_slice(&chat.incident_body(&inc, "trigger")).unwrap();
        let text = b["text"].as_str().unwrap();
        assert!(
            text.contains("[ERROR]")
                && text.contains("Client")
                && text.contains("Next step: n")
                && text.contains("agenfleet incidents ack 1"),
            "{text}"
        );
    }
}
