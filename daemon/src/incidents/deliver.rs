//! Delivering incidents to the parties' routes: a webhook POST (our JSON or the PagerDuty
//! Events v2 shape) signed with HMAC-SHA256 over the timestamp and the body, or a local
//! command fed the JSON on stdin. Each attempt is reported back (and so recorded on the
//! incident); failures are retried with capped exponential backoff and, once every attempt
//! failed, the route is marked undelivered on the incident — visible, never silent.

use crate::config::RouteConfig;
use agenfleet_protocol::incidents::{sign, Incident, Party, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub enum Target {
    Webhook {
        url: url::Url,
        secret: zeroize::Zeroizing<Vec<u8>>,
    },
    Command(Vec<String>),
}

/// A configured route, its secret loaded.
pub struct Route {
    /// How it is named in delivery records: `client webhook http://…` (never the secret).
    pub name: String,
    pub party: Party,
    pub target: Target,
    pub pagerduty: bool,
    pub routing_key: String,
    pub max_attempts: u32,
}

impl Route {
    pub fn from_config(c: &RouteConfig) -> Result<Route, String> {
        c.check()?;
        let party = Party::parse(&c.party).ok_or("unknown party")?;
        let target = if c.webhook.is_empty() {
            Target::Command(c.command.clone())
        } else {
            let url = url::Url::parse(&c.webhook).map_err(|e| e.to_string())?;
            let raw = crate::config::read_bounded(&c.secret_file)
                .map_err(|e| format!("cannot read {}: {e}", c.secret_file.display()))?;
            let secret: Vec<u8> = String::from_utf8_lossy(&raw).trim().as_bytes().to_vec();
            Target::Webhook {
                url,
                secret: zeroize::Zeroizing::new(secret),
            }
        };
        let name = match &target {
            Target::Webhook { url, .. } => format!("{party} webhook {url}"),
            Target::Command(cmd) => format!(
                "{party} command {}",
                cmd.first().cloned().unwrap_or_default()
            ),
        };
        Ok(Route {
            name,
            party,
            target,
            pagerduty: c.format == "pagerduty",
            routing_key: c.routing_key.clone(),
            max_attempts: if c.max_attempts == 0 {
                8
            } else {
                c.max_attempts
            },
        })
    }

    /// The body sent for `event` (trigger, escalate, acknowledge, resolve, reassign).
    pub fn body(&self, inc: &Incident, event: &str) -> Vec<u8> {
        let v = if self.pagerduty {
            inc.pagerduty_event(&self.routing_key)
        } else {
            serde_json::json!({"event": event, "incident": inc})
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// One attempt. `Err` says what went wrong (never the secret).
    pub async fn attempt(
        &self,
        inc: &Incident,
        body: &[u8],
        event: &str,
    ) -> Result<String, String> {
        match &self.target {
            Target::Webhook { url, secret } => {
                let ts = agenfleet_protocol::now_ms() / 1000;
                let sig = sign(secret, ts, body);
                let status = post(
                    url,
                    &[(TIMESTAMP_HEADER, ts.to_string()), (SIGNATURE_HEADER, sig)],
                    body,
                )
                .await?;
                if (200..300).contains(&status) {
                    Ok(format!("HTTP {status}"))
                } else {
                    Err(format!("HTTP {status}"))
                }
            }
            Target::Command(cmd) => run_command(cmd, inc, body, event).await,
        }
    }
}

/// The delay before attempt `n` (1-based): 0, then 1 s doubling, capped at 60 s.
pub fn backoff(n: u32) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (n - 2).min(6)).min(MAX_BACKOFF)
}

/// A minimal HTTP/1.1 POST (one request per connection); answers the status code.
async fn post(url: &url::Url, headers: &[(&str, String)], body: &[u8]) -> Result<u16, String> {
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| format!("connect to {host}:{port} timed out"))?
    .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path = format!("{path}?{q}");
    }
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: agenfleetd/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        agenfleet_protocol::SOFTWARE_VERSION,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let exchange = async {
        stream.write_all(req.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await?;
        let mut buf = vec![0u8; 1024];
        let mut got = 0;
        while got < buf.len() {
            let n = stream.read(&mut buf[got..]).await?;
            if n == 0 || buf[..got + n].windows(2).any(|w| w == b"\r\n") {
                got += n;
                break;
            }
            got += n;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..got]).to_string())
    };
    let head = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{host}:{port} did not answer within {ANSWER_TIMEOUT:?}"))?
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{host}:{port} answered something that is not HTTP"))?;
    Ok(status)
}

async fn run_command(
    cmd: &[String],
    inc: &Incident,
    body: &[u8],
    event: &str,
) -> Result<String, String> {
    let (prog, args) = cmd.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .env("AGENFLEET_INCIDENT_ID", inc.id.to_string())
        .env("AGENFLEET_INCIDENT_EVENT", event)
        .env("AGENFLEET_INCIDENT_PARTY", inc.party.as_str())
        .env("AGENFLEET_INCIDENT_SEVERITY", inc.severity.as_str())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let d: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(d, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
