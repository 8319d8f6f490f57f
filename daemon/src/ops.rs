//! Long operations in progress — an image build (its Dockerfile steps), the agents'
//! resync after an unseal — so the console and the CLI can show how far they have got.
//! Each is an `OpHandle` whose owner reports progress; dropping it ends the operation.
//! The list is published in the daemon's facts (the console's watch carries it) and on a
//! revision counter that `Fleet::operations` long-polls (the CLI's progress bar). A
//! progress report is published when its whole percent (or, without a total, its count)
//! changes: an operation over 10,000 agents makes at most ~100 updates.

use crate::fleet_state::FleetState;
use agenfleet_protocol::Operation;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

#[derive(Default)]
struct Inner {
    next_id: u64,
    running: BTreeMap<u64, Operation>,
}

/// The operations in progress (cheap to clone: one shared list).
#[derive(Clone)]
pub struct Ops {
    fleet: FleetState,
    inner: Arc<Mutex<Inner>>,
    /// Bumped at each published change, with the list as of then.
    published: Arc<watch::Sender<(u64, Vec<Operation>)>>,
}

/// One operation in progress; dropping it ends it.
pub struct OpHandle {
    ops: Ops,
    id: u64,
}

/// The step a Dockerfile build is at, from the engine's "Step 3/7 : RUN …" line.
pub fn build_step(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim_start().strip_prefix("Step ")?;
    let (frac, _) = rest.split_once(' ').unwrap_or((rest, ""));
    let (done, total) = frac.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

/// What a person sees of the progress: the whole percent, or the count without a total.
fn shown(o: &Operation) -> u64 {
    if o.total == 0 {
        o.done
    } else {
        (o.ratio() * 100.0) as u64
    }
}

impl Ops {
    pub fn new(fleet: FleetState) -> Ops {
        Ops {
            fleet,
            inner: Arc::default(),
            published: Arc::new(watch::channel((0, Vec::new())).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, list: Vec<Operation>) {
        self.published.send_modify(|(rev, l)| {
            *rev += 1;
            l.clone_from(&list);
        });
        self.fleet.update_daemon(|d| d.operations = list);
    }

    fn list(inner: &Inner) -> Vec<Operation> {
        inner.running.values().cloned().collect()
    }

    /// Starts an operation (`total`: 0 when not known yet).
    pub fn start(&self, what: impl Into<String>, unit: &str, total: u64) -> OpHandle {
        let list = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            inner.running.insert(
                id,
                Operation {
                    id,
                    what: what.into(),
                    done: 0,
                    total,
                    unit: unit.to_string(),
                    started_ms: agenfleet_protocol::now_ms(),
                },
            );
            (id, Self::list(&inner))
        };
        self.publish(list.1);
        OpHandle {
            ops: self.clone(),
            id: list.0,
        }
    }

    /// The list now and its revision.
    pub fn current(&self) -> (u64, Vec<Operation>) {
        self.published.borrow().clone()
    }

    /// Waits up to `max_wait` for operation `id` to end.
    pub async fn wait_end(&self, id: u64, max_wait: std::time::Duration) -> bool {
        let mut rx = self.published.subscribe();
        let gone = |(_, l): &(u64, Vec<Operation>)| l.iter().all(|o| o.id != id);
        let ended = tokio::time::timeout(max_wait, rx.wait_for(gone))
            .await
            .is_ok();
        ended
    }

    /// Waits up to `max_wait` for a revision after `since`; answers the list then.
    pub async fn wait(&self, since: u64, max_wait: std::time::Duration) -> (u64, Vec<Operation>) {
        let mut rx = self.published.subscribe();
        let _ = tokio::time::timeout(max_wait, rx.wait_for(|(rev, _)| *rev > since)).await;
        self.current()
    }
}

impl OpHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sets how far it has got (and the total, when it becomes known).
    pub fn progress(&self, done: u64, total: u64) {
        let list = {
            let mut inner = self.ops.lock();
            let Some(o) = inner.running.get_mut(&self.id) else {
                return;
            };
            let before = (shown(o), o.total);
            o.done = done;
            o.total = total;
            if (shown(o), o.total) == before {
                return;
            }
            Ops::list(&inner)
        };
        self.ops.publish(list);
    }

    /// One more done (of the total it has).
    pub fn step(&self) {
        let (done, total) = {
            let inner = self.ops.lock();
            match inner.running.get(&self.id) {
                Some(o) => (o.done + 1, o.total),
                None => return,
            }
        };
        self.progress(done, total);
    }
}

impl Drop for OpHandle {
    fn drop(&mut self) {
        let list = {
            let mut inner = self.ops.lock();
            inner.running.remove(&self.id);
            Ops::list(&inner)
        };
        self.ops.publish(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet_state::tests::daemon;
    use std::time::Duration;

    #[test]
    fn the_engines_step_lines_are_read() {
        assert_eq!(build_step("Step 3/7 : RUN make"), Some((3, 7)));
        assert_eq!(build_step(" Step 12/12 : CMD [\"x\"]"), Some((12, 12)));
        assert_eq!(build_step("Successfully built 1234"), None);
        assert_eq!(build_step("Step x/7 : RUN"), None);
    }

    #[tokio::test]
    async fn progress_is_published_by_the_percent_and_ends_with_the_handle() {
        let fleet = FleetState::new(daemon());
        let ops = Ops::new(fleet.clone());
        let (rev0, _) = ops.current();
        let h = ops.start("unseal: resyncing agents", "agents", 1000);
        assert_eq!(fleet.daemon().operations.len(), 1);
        let (rev1, list) = ops.current();
        assert!(rev1 > rev0);
        assert_eq!(list[0].progress(), "0/1000 agents");
        for _ in 0..1000 {
            h.step();
        }
        let (rev2, list) = ops.current();
        assert_eq!(list[0].progress(), "1000/1000 agents");
        assert_eq!(rev2 - rev1, 100, "one update per percent, not per agent");
        // A waiting caller hears of the end.
        let waiter = {
            let ops = ops.clone();
            tokio::spawn(async move { ops.wait(rev2, Duration::from_secs(600)).await })
        };
        tokio::task::yield_now().await;
        drop(h);
        let (rev3, list) = waiter.await.expect("waiter");
        assert!(rev3 > rev2 && list.is_empty());
        assert!(fleet.daemon().operations.is_empty());
    }
}
