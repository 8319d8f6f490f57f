//! The connection to the container engine (Docker, or Podman's Docker-compatible socket):
//! connect and negotiate the API version, and pump the engine's event stream into a channel
//! at once (the engine drops events for slow listeners). On any error the pump marks the
//! engine disconnected, reconnects with backoff, resubscribes (replaying from the last event
//! seen) and asks the supervisor to re-list and reconcile.

use agenfleet_protocol::{ApiError, EngineInfo};
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the engine pump reports.
#[derive(Debug, Clone)]
pub enum EngineSignal {
    /// (Re)connected: the event stream is live; re-list containers and reconcile.
    Connected(EngineInfo),
    /// Lost the engine.
    Disconnected(String),
    /// One container event of ours.
    Container(ContainerEvent),
}

#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub action: String,
    pub container_id: String,
    pub labels: HashMap<String, String>,
    pub time_ns: i64,
}

/// The engine client, present once connected and negotiated.
#[derive(Clone)]
pub struct Engine {
    docker: Arc<RwLock<Option<Docker>>>,
    last_error: Arc<RwLock<Option<String>>>,
    /// Flips to true at every (re)connection, to false when the engine is lost.
    connected: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            docker: Arc::default(),
            last_error: Arc::default(),
            connected: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

pub fn bollard_err(context: &str, e: bollard::errors::Error) -> ApiError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            if status_code == 404 {
                ApiError::not_found(format!("{context}: {message}"))
            } else if status_code == 409 {
                ApiError::precondition(format!("{context}: {message}"))
            } else {
                ApiError::internal(format!(
                    "{context}: engine answered {status_code}: {message}"
                ))
            }
        }
        other => ApiError::unavailable(format!(
            "{context}: the container engine is unreachable: {other}"
        )),
    }
}

pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Removes a container by force (running or not): true once removed, false when it was
/// already gone.
pub async fn remove_container(docker: &Docker, id: &str) -> Result<bool, bollard::errors::Error> {
    let opts = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn is_conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// Removes an engine object once nothing uses it any more (Swarm refuses to remove a
/// secret, config or network a task still holds; the engine a volume a container still
/// mounts): asked again with growing pauses for a minute, then left with a warning.
pub fn remove_later<F, Fut>(what: String, remove: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), bollard::errors::Error>> + Send,
{
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(250);
        let until = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match remove().await {
                Ok(()) => return,
                Err(e) if is_not_found(&e) => return,
                Err(e) if std::time::Instant::now() > until => {
                    tracing::warn!(object = %what, error = %e, "cannot remove it");
                    return;
                }
                Err(_) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    });
}

impl Engine {
    /// The client, or `Unavailable` naming why the engine is not connected.
    pub fn client(&self) -> Result<Docker, ApiError> {
        if let Some(d) = self
            .docker
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(d);
        }
        let why = self
            .last_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "not connected yet".into());
        Err(ApiError::unavailable(format!(
            "the container engine is not connected: {why}"
        )))
    }

    /// The client; while the daemon's first connection attempt is still under way (just
    /// after start), waits for it up to `max` instead of failing at once.
    pub async fn client_when_up(&self, max: Duration) -> Result<Docker, ApiError> {
        let first_attempt = self
            .last_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none();
        if first_attempt {
            let mut rx = self.connected.subscribe();
            let _ = tokio::time::timeout(max, rx.wait_for(|up| *up)).await;
        }
        self.client()
    }

    fn set(&self, d: Option<Docker>, err: Option<String>) {
        let up = d.is_some();
        *self.docker.write().unwrap_or_else(|p| p.into_inner()) = d;
        *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = err;
        self.connected.send_replace(up);
    }

    async fn connect(host: &str) -> Result<(Docker, EngineInfo), String> {
        let d = if host.is_empty() {
            Docker::connect_with_defaults()
        } else {
            Docker::connect_with_host(host)
        }
        .map_err(|e| format!("cannot set up the engine client: {e}"))?;
        let d = d
            .with_timeout(Duration::from_secs(120))
            .negotiate_version()
            .await
            .map_err(|e| format!("cannot reach the engine: {e}"))?;
        let v = d
            .version()
            .await
            .map_err(|e| format!("the engine does not answer: {e}"))?;
        Ok((
            d,
            EngineInfo {
                connected: true,
                version: v.version,
                api_version: v.api_version,
                error: None,
            },
        ))
    }

    /// Runs forever: connects, pumps events of containers labelled with our instance into
    /// `out`, reconnects on error with capped exponential backoff.
    pub async fn run(
        self,
        host: String,
        instance: String,
        out: mpsc::UnboundedSender<EngineSignal>,
    ) {
        let mut backoff = Duration::from_millis(200);
        let mut last_event_secs: Option<i64> = None;
        loop {
            let (docker, info) = match Self::connect(&host).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "container engine unavailable; retrying in {backoff:?}");
                    self.set(None, Some(e.clone()));
                    if out.send(EngineSignal::Disconnected(e)).is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            tracing::info!(version = ?info.version, api = ?info.api_version, "connected to the container engine");
            self.set(Some(docker.clone()), None);
            let mut filters = HashMap::new();
            filters.insert("type".to_string(), vec!["container".to_string()]);
            filters.insert(
                "label".to_string(),
                vec![format!("{}={instance}", super::container::LABEL_INSTANCE)],
            );
            // Replay from just before the last event we saw, so nothing falls between the
            // old stream and the new one (duplicates are harmless: handlers re-inspect).
            let since = last_event_secs.map(|s| (s - 1).to_string());
            let opts = EventsOptions {
                since,
                until: None,
                filters: Some(filters),
            };
            let mut stream = docker.events(Some(opts));
            if out.send(EngineSignal::Connected(info)).is_err() {
                return;
            }
            let reason = loop {
                match stream.next().await {
                    Some(Ok(ev)) => {
                        let actor = ev.actor.unwrap_or_default();
                        let Some(id) = actor.id else { continue };
                        let time_ns = ev
                            .time_nano
                            .or_else(|| ev.time.map(|t| t * 1_000_000_000))
                            .unwrap_or(0);
                        last_event_secs = Some(time_ns / 1_000_000_000);
                        let sig = EngineSignal::Container(ContainerEvent {
                            action: ev.action.unwrap_or_default(),
                            container_id: id,
                            labels: actor.attributes.unwrap_or_default(),
                            time_ns,
                        });
                        if out.send(sig).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => break format!("event stream failed: {e}"),
                    None => break "event stream ended".to_string(),
                }
            };
            tracing::warn!(%reason, "lost the container engine's event stream; reconnecting");
            self.set(None, Some(reason.clone()));
            if out.send(EngineSignal::Disconnected(reason)).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
