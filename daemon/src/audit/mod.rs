//! The tamper-evident audit log: append-only, hash-chained segment files in the state dir
//! (see `format`), written by one thread with group commit — many concurrent writers share
//! one `fdatasync`, and each caller is answered only once its record is durable — plus
//! signed checkpoints (see `checkpoint`).
//!
//! Fail closed: a write or sync error, or damage found at start, closes the log for
//! writing; `record` then refuses, and since every mutation records before it acts, the
//! daemon refuses mutations while it keeps serving reads. A torn tail found at start (a
//! record half-written when the process died) is truncated, and the truncation recorded.

pub mod checkpoint;
pub mod escrow;
pub mod format;
pub mod retention;
pub mod watch;

use agenfleet_protocol::{
    AuditEntry, AuditEvent, AuditQuery, AuditStatus, Checkpoint, VerifyReport,
};
use checkpoint::Signer;
use format::{Hash, Record};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Segments are rolled over at this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// At most this many records go into one group commit.
const MAX_BATCH: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log is closed for writing: {0}")]
    Closed(String),
    #[error("audit event of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("audit log I/O: {0}")]
    Io(String),
}

struct Append {
    event: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<Result<u64, AuditError>>,
}

/// What the writer thread is asked to do.
enum Op {
    Append(Append),
    Cut(tokio::sync::oneshot::Sender<Result<Cut, AuditError>>),
    /// A signing key for a log opened without one (it was escrowed in the sealed vault).
    Sign(Box<Signer>, String),
    /// Sign the retention anchor for record (seq, hash).
    Anchor(
        u64,
        Hash,
        tokio::sync::oneshot::Sender<Result<Checkpoint, AuditError>>,
    ),
}

/// A point of the log fixed for a backup: a checkpoint signed for it, and where its last
/// record ends (segments before `segment` are complete and never change again).
#[derive(Debug, Clone)]
pub struct Cut {
    pub checkpoint: Checkpoint,
    /// The segment being written and its length at the cut (None: no segment yet).
    pub segment: Option<(PathBuf, u64)>,
}

struct Shared {
    status: Mutex<AuditStatus>,
    head: tokio::sync::watch::Sender<u64>,
    /// Why the log closed for writing while running (None: open).
    closed: tokio::sync::watch::Sender<Option<String>>,
    /// Whether the writer has a signing key.
    signed: std::sync::atomic::AtomicBool,
}

/// Tunables of the log.
#[derive(Debug, Clone)]
pub struct Options {
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// What opening the log found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub records: u64,
    pub truncated: Option<String>,
    pub damage: Option<String>,
}

/// A handle on the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Op>,
    shared: Arc<Shared>,
    dir: PathBuf,
}

fn hex32(h: &Hash) -> String {
    hex::encode(h)
}

fn now_ms() -> u64 {
    agenfleet_protocol::now_ms()
}

struct Writer {
    dir: PathBuf,
    file: Option<File>,
    /// The segment `file` writes to.
    segment_path: PathBuf,
    segment_len: u64,
    seq: u64,
    hash: Hash,
    last_time: u64,
    since_checkpoint: u64,
    last_checkpoint_at: Instant,
    signer: Option<Signer>,
    opts: Options,
    shared: Arc<Shared>,
    failed: Option<String>,
    /// Size of the previous group commit (a hint of how many writers are active).
    last_batch: usize,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Writer {
    fn open_segment(&mut self) -> std::io::Result<()> {
        let first = self.seq + 1;
        let path = self.dir.join(format::segment_name(first));
        let mut f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        f.write_all(&format::segment_header(first))?;
        f.sync_all()?;
        sync_dir(&self.dir)?;
        self.file = Some(f);
        self.segment_path = path;
        self.segment_len = format::SEGMENT_HEADER as u64;
        Ok(())
    }

    fn fail(&mut self, why: String) {
        tracing::error!(problem = %why, "audit log failed: refusing every mutation from now on (reads continue)");
        let mut st = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        st.writable = false;
        st.problem = Some(why.clone());
        drop(st);
        self.shared.closed.send_replace(Some(why.clone()));
        self.failed = Some(why);
    }

    fn write_batch(&mut self, batch: Vec<Append>) {
        if let Some(why) = &self.failed {
            for a in batch {
                let _ = a.reply.send(Err(AuditError::Closed(why.clone())));
            }
            return;
        }
        if self.file.is_none() || self.segment_len >= self.opts.segment_bytes {
            if let Err(e) = self.open_segment() {
                self.fail(format!("cannot start a new segment: {e}"));
                return self.write_batch(batch);
            }
        }
        let time = now_ms().max(self.last_time);
        let mut buf = Vec::with_capacity(batch.iter().map(|a| a.event.len() + 64).sum());
        let (mut seq, mut hash) = (self.seq, self.hash);
        for a in &batch {
            seq += 1;
            hash = format::encode(&mut buf, seq, time, &hash, &a.event);
        }
        let result = match self.file.as_mut() {
            Some(f) => f.write_all(&buf).and_then(|_| f.sync_data()),
            None => Err(std::io::Error::other("no segment open")),
        };
        if let Err(e) = result {
            self.fail(format!("writing to {} failed: {e}", self.dir.display()));
            for a in batch {
                let _ = a.reply.send(Err(AuditError::Closed(
                    self.failed.clone().unwrap_or_default(),
                )));
            }
            return;
        }
        let first = self.seq + 1;
        self.seq = seq;
        self.hash = hash;
        self.last_time = time;
        self.segment_len += buf.len() as u64;
        self.since_checkpoint += batch.len() as u64;
        {
            let mut st = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
            st.head_seq = seq;
            st.head_hash = hex32(&hash);
        }
        for (i, a) in batch.into_iter().enumerate() {
            let _ = a.reply.send(Ok(first + i as u64));
        }
        self.shared.head.send_replace(seq);
        if self.since_checkpoint >= self.opts.checkpoint_every {
            self.checkpoint();
        }
    }

    fn checkpoint(&mut self) {
        self.last_checkpoint_at = Instant::now();
        if self.since_checkpoint == 0 || self.failed.is_some() {
            return;
        }
        self.since_checkpoint = 0;
        let Some(signer) = &self.signer else { return };
        let cp = signer.sign(self.seq, &hex32(&self.hash), now_ms());
        match checkpoint::append(&self.dir, &cp) {
            Ok(()) => {
                let mut st = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
                st.last_checkpoint = Some(cp);
            }
            Err(e) => self.fail(format!("cannot store a checkpoint: {e}")),
        }
    }

    /// Signs and stores the retention anchor: record `seq` (before the head), whose hash
    /// is `hash`, is where the kept log's chain starts.
    fn anchor(&mut self, seq: u64, hash: Hash) -> Result<Checkpoint, AuditError> {
        if let Some(why) = &self.failed {
            return Err(AuditError::Closed(why.clone()));
        }
        let Some(signer) = &self.signer else {
            return Err(AuditError::Closed(
                "no signing key to anchor the kept log (retention waits for `vault unseal`)".into(),
            ));
        };
        if seq >= self.seq {
            return Err(AuditError::Io(format!(
                "an anchor at record {seq} would not be before the head ({})",
                self.seq
            )));
        }
        let cp = signer.sign(seq, &hex32(&hash), now_ms());
        checkpoint::store_anchor(&self.dir, &cp)
            .map_err(|e| AuditError::Io(format!("cannot store the retention anchor: {e}")))?;
        Ok(cp)
    }

    /// Takes a signing key (if it has none) and signs the records written without one.
    fn take_signer(&mut self, signer: Signer, signing: String) {
        if self.signer.is_some() {
            return;
        }
        let _ = std::fs::write(
            self.dir.join(checkpoint::PUBLIC_KEY_FILE),
            format!("{}\n", signer.public_hex()),
        );
        self.signer = Some(signer);
        self.shared
            .signed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        {
            let mut st = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
            st.signing = signing;
        }
        self.since_checkpoint = self.since_checkpoint.max(1);
        self.checkpoint();
    }

    /// Signs a checkpoint at the head (even if one was just signed there) and answers it
    /// with where the current segment ends.
    fn cut(&mut self) -> Result<Cut, AuditError> {
        if let Some(why) = &self.failed {
            return Err(AuditError::Closed(why.clone()));
        }
        let Some(signer) = &self.signer else {
            return Err(AuditError::Closed(
                "the audit log has no signing key, so no checkpoint can vouch for a copy of it"
                    .into(),
            ));
        };
        let cp = signer.sign(self.seq, &hex32(&self.hash), now_ms());
        if let Err(e) = checkpoint::append(&self.dir, &cp) {
            self.fail(format!("cannot store a checkpoint: {e}"));
            return Err(AuditError::Io(format!("cannot store a checkpoint: {e}")));
        }
        self.since_checkpoint = 0;
        self.last_checkpoint_at = Instant::now();
        {
            let mut st = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
            st.last_checkpoint = Some(cp.clone());
        }
        let segment = self
            .file
            .as_ref()
            .map(|_| (self.segment_path.clone(), self.segment_len));
        Ok(Cut {
            checkpoint: cp,
            segment,
        })
    }

    fn run(mut self, rx: mpsc::Receiver<Op>) {
        // Cuts and keys that arrive while a batch is gathered are handled after that batch.
        let mut later: Vec<Op> = Vec::new();
        loop {
            for op in std::mem::take(&mut later) {
                match op {
                    Op::Cut(reply) => {
                        let _ = tokio::sync::oneshot::Sender::send(reply, self.cut());
                    }
                    Op::Sign(signer, signing) => self.take_signer(*signer, signing),
                    Op::Anchor(seq, hash, reply) => {
                        let _ = tokio::sync::oneshot::Sender::send(reply, self.anchor(seq, hash));
                    }
                    Op::Append(a) => self.write_batch(vec![a]),
                }
            }
            let wait = self
                .opts
                .checkpoint_interval
                .saturating_sub(self.last_checkpoint_at.elapsed());
            match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Op::Append(first)) => {
                    let mut batch = vec![first];
                    let drain = |batch: &mut Vec<Append>, later: &mut Vec<Op>| {
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(Op::Append(a)) => batch.push(a),
                                Ok(other) => later.push(other),
                                Err(_) => break,
                            }
                        }
                    };
                    drain(&mut batch, &mut later);
                    // Under concurrency the writers just answered are still re-submitting:
                    // give them a moment so one sync covers them all (group commit).
                    if self.last_batch > 1 && batch.len() < self.last_batch {
                        std::thread::sleep(Duration::from_micros(30));
                        drain(&mut batch, &mut later);
                    }
                    self.last_batch = batch.len();
                    self.write_batch(batch);
                }
                Ok(other) => later.push(other),
                Err(mpsc::RecvTimeoutError::Timeout) => self.checkpoint(),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.checkpoint();
                    return;
                }
            }
        }
    }
}

fn entry_of(r: &Record<'_>) -> Option<AuditEntry> {
    let event: AuditEvent = serde_json::from_slice(r.event).ok()?;
    Some(AuditEntry {
        seq: r.seq,
        time_ms: r.time_ms,
        hash: hex32(&r.hash),
        event,
    })
}

fn matches(q: &AuditQuery, e: &AuditEntry) -> bool {
    if e.seq <= q.after_seq {
        return false;
    }
    if let Some(a) = &q.actor {
        if !e.event.actor.contains(a.as_str()) {
            return false;
        }
    }
    if let Some(a) = &q.agent {
        let full = format!(
            "{}/{}",
            e.event.tenant.as_deref().unwrap_or(""),
            e.event.agent.as_deref().unwrap_or("")
        );
        if e.event.agent.as_deref() != Some(a.as_str()) && &full != a {
            return false;
        }
    }
    if let Some(a) = &q.action {
        let ok = if a.ends_with('.') {
            e.event.action.starts_with(a.as_str())
        } else {
            &e.event.action == a
        };
        if !ok {
            return false;
        }
    }
    if q.since_ms.is_some_and(|s| e.time_ms < s) || q.until_ms.is_some_and(|u| e.time_ms > u) {
        return false;
    }
    true
}

impl AuditLog {
    /// Opens (creating) the log in `dir`, truncating a torn tail and refusing writes if
    /// it finds damage. Starts the writer thread.
    pub fn open(
        dir: &Path,
        signer: Option<Signer>,
        signing: String,
        opts: Options,
    ) -> Result<(AuditLog, OpenReport), AuditError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| AuditError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let scan = format::scan(dir, |_, _| {})
            .map_err(|e| AuditError::Io(format!("cannot read {}: {e}", dir.display())))?;
        let mut report = OpenReport {
            records: scan.records,
            truncated: None,
            damage: None,
        };
        let mut failed = None;
        let mut file = None;
        let mut segment_len = 0;
        let mut segment_path = PathBuf::new();
        if let Some(bad) = &scan.bad {
            let why = format!("damage found at {bad}; writes stopped until an operator acts (run `agenfleet audit verify`)");
            report.damage = Some(why.clone());
            failed = Some(why);
        } else {
            if let Some((path, offset)) = &scan.torn_tail {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| AuditError::Io(format!("cannot open {}: {e}", path.display())))?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if *offset < format::SEGMENT_HEADER as u64 {
                    drop(f);
                    std::fs::remove_file(path).map_err(|e| AuditError::Io(e.to_string()))?;
                } else {
                    f.set_len(*offset).and_then(|_| f.sync_all()).map_err(|e| {
                        AuditError::Io(format!(
                            "cannot truncate the torn tail of {}: {e}",
                            path.display()
                        ))
                    })?;
                }
                let msg = format!(
                    "a torn tail of {} bytes was cut off {} at byte {offset} (after record {})",
                    len.saturating_sub(*offset),
                    path.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default(),
                    scan.head_seq
                );
                tracing::warn!("{msg}");
                report.truncated = Some(msg);
            }
            if let Some((path, offset)) = &scan.end {
                if path.exists() && *offset >= format::SEGMENT_HEADER as u64 {
                    let f = OpenOptions::new().append(true).open(path).map_err(|e| {
                        AuditError::Io(format!("cannot open {}: {e}", path.display()))
                    })?;
                    segment_len = *offset;
                    segment_path = path.clone();
                    file = Some(f);
                }
            }
        }
        let last_checkpoint = checkpoint::load_all(dir)
            .ok()
            .and_then(|v| v.last().cloned());
        let (head, _) = tokio::sync::watch::channel(scan.head_seq);
        let shared = Arc::new(Shared {
            status: Mutex::new(AuditStatus {
                writable: failed.is_none(),
                problem: failed.clone(),
                head_seq: scan.head_seq,
                head_hash: hex32(&scan.head_hash),
                verified_to: scan.head_seq,
                last_checkpoint,
                signing,
            }),
            head,
            closed: tokio::sync::watch::Sender::new(failed.clone()),
            signed: std::sync::atomic::AtomicBool::new(signer.is_some()),
        });
        if let Some(s) = &signer {
            let _ = std::fs::write(
                dir.join(checkpoint::PUBLIC_KEY_FILE),
                format!("{}\n", s.public_hex()),
            );
        }
        let writer = Writer {
            dir: dir.to_path_buf(),
            file,
            segment_path,
            segment_len,
            seq: scan.head_seq,
            hash: scan.head_hash,
            last_time: 0,
            since_checkpoint: 0,
            last_checkpoint_at: Instant::now(),
            signer,
            opts,
            shared: shared.clone(),
            failed,
            last_batch: 0,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Io(format!("cannot start the audit writer: {e}")))?;
        Ok((
            AuditLog {
                tx,
                shared,
                dir: dir.to_path_buf(),
            },
            report,
        ))
    }

    /// Appends an event and waits until it is durable; returns its sequence number.
    pub async fn record(&self, event: &AuditEvent) -> Result<u64, AuditError> {
        let bytes = serde_json::to_vec(event).map_err(|e| AuditError::Io(e.to_string()))?;
        if bytes.len() > format::MAX_EVENT {
            return Err(AuditError::TooLarge(bytes.len()));
        }
        let started = Instant::now();
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Op::Append(Append {
                event: bytes,
                reply,
            }))
            .map_err(|_| AuditError::Closed("the audit writer has stopped".into()))?;
        let seq = rx
            .await
            .map_err(|_| AuditError::Closed("the audit writer has stopped".into()))??;
        crate::metrics::counters().audit_append(started.elapsed().as_secs_f64());
        Ok(seq)
    }

    /// Signs the retention anchor at record `seq` (see `retention`).
    pub async fn anchor(&self, seq: u64, hash: Hash) -> Result<Checkpoint, AuditError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Op::Anchor(seq, hash, reply))
            .map_err(|_| AuditError::Closed("the audit writer has stopped".into()))?;
        rx.await
            .map_err(|_| AuditError::Closed("the audit writer has stopped".into()))?
    }

    /// Gives a log opened without a signing key its key; a checkpoint is signed at once.
    pub fn set_signer(&self, signer: Signer, signing: String) {
        let _ = self.tx.send(Op::Sign(Box::new(signer), signing));
    }

    /// Whether checkpoints are being signed.
    pub fn is_signed(&self) -> bool {
        self.shared.signed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fixes a point of the log for a backup: a checkpoint signed at the head, and where
    /// the segment being written ends there. Refused when the log is closed or unsigned.
    pub async fn cut(&self) -> Result<Cut, AuditError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Op::Cut(reply))
            .map_err(|_| AuditError::Closed("the audit writer has stopped".into()))?;
        rx.await
            .map_err(|_| AuditError::Closed("the audit writer has stopped".into()))?
    }

    pub fn status(&self) -> AuditStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The writer's newest record: (sequence number, hash), from memory (None: empty).
    pub fn head(&self) -> Option<(u64, Hash)> {
        let st = self.status();
        let mut h = [0u8; 32];
        hex::decode_to_slice(&st.head_hash, &mut h).ok()?;
        (st.head_seq > 0).then_some((st.head_seq, h))
    }

    /// Hears why the log closed for writing (None while it is open).
    pub fn closed(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.closed.subscribe()
    }

    /// Records matching `q`, oldest first (or the newest `limit` with `q.newest`).
    pub fn query(
        &self,
        q: &AuditQuery,
        visible: &dyn Fn(&AuditEntry) -> bool,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        let limit = if q.limit == 0 { 1000 } else { q.limit as usize };
        // Only what is durable: a record past the head may still be waiting for its sync.
        let head = self.status().head_seq;
        let io = |e: std::io::Error| AuditError::Io(e.to_string());
        let segments = format::list_segments(&self.dir).map_err(io)?;
        // Start at the segment that holds `after_seq + 1`: earlier ones cannot match.
        let start = segments
            .iter()
            .rposition(|(first, _)| *first <= q.after_seq + 1)
            .unwrap_or(0);
        let wanted = |r: &Record<'_>| -> Option<AuditEntry> {
            if r.seq <= q.after_seq || r.seq > head {
                return None;
            }
            entry_of(r).filter(|e| matches(q, e) && visible(e))
        };
        if q.newest {
            // Walk back from the newest segment until enough records match.
            let mut out: std::collections::VecDeque<AuditEntry> = Default::default();
            for (_, path) in segments[start..].iter().rev() {
                let mut here = Vec::new();
                format::read_segment(path, |r| here.extend(wanted(r))).map_err(io)?;
                for e in here.into_iter().rev() {
                    if out.len() == limit {
                        break;
                    }
                    out.push_front(e);
                }
                if out.len() == limit {
                    break;
                }
            }
            return Ok(out.into());
        }
        let mut out = Vec::new();
        for (_, path) in &segments[start..] {
            format::read_segment(path, |r| {
                if out.len() < limit {
                    out.extend(wanted(r));
                }
            })
            .map_err(io)?;
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Waits until the log's head passes `seq` (or `max_wait` elapses).
    pub async fn wait_past(&self, seq: u64, max_wait: Duration) {
        let mut rx = self.shared.head.subscribe();
        let _ = tokio::time::timeout(max_wait, async {
            loop {
                if *rx.borrow_and_update() > seq {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Verifies the whole log now; see `verify_dir`.
    pub fn verify(&self, trusted: Option<&Checkpoint>) -> VerifyReport {
        verify_dir(&self.dir, trusted)
    }
}

/// Verifies the log in `dir`: every checksum, the chain, every stored checkpoint's
/// signature and hash, and — if given — a checkpoint the caller kept (a log rolled back
/// or truncated behind it fails).
pub fn verify_dir(dir: &Path, trusted: Option<&Checkpoint>) -> VerifyReport {
    let t = Instant::now();
    let checkpoints = checkpoint::load_all(dir);
    // Check every checkpoint's signature on another core while the chain is checked.
    let sig_check = {
        let cps = checkpoints.clone().unwrap_or_default();
        std::thread::spawn(move || {
            let key = cps.first().map(|c| c.public_key.clone());
            let mut ok = 0u64;
            let mut problems = Vec::new();
            let mut parsed = None;
            for c in &cps {
                match checkpoint::verify_signature_cached(c, key.as_deref(), &mut parsed) {
                    Ok(()) => ok += 1,
                    Err(e) => problems.push(e),
                }
            }
            (ok, problems)
        })
    };
    // (seq, hash) pairs that checkpoints vouch for, in order: one cursor walks them as
    // the records go by.
    let mut wanted: Vec<(u64, String)> = checkpoints
        .as_ref()
        .map(|cps| cps.iter().map(|c| (c.seq, c.hash.clone())).collect())
        .unwrap_or_default();
    if let Some(c) = trusted {
        wanted.push((c.seq, c.hash.clone()));
    }
    wanted.sort();
    let mut cursor = 0;
    let mut mismatch: Option<String> = None;
    let scan = format::scan(dir, |seq, hash| {
        while cursor < wanted.len() && wanted[cursor].0 < seq {
            cursor += 1;
        }
        while cursor < wanted.len() && wanted[cursor].0 == seq {
            let h = hex32(hash);
            let w = &wanted[cursor].1;
            if *w != h && mismatch.is_none() {
                mismatch = Some(format!(
                    "record {} has hash {}… but a checkpoint says {}… (the log was rewritten)",
                    seq,
                    &h[..12],
                    &w[..w.len().min(12)]
                ));
            }
            cursor += 1;
        }
    });
    let mut report = VerifyReport {
        valid: false,
        records: 0,
        bytes: 0,
        head_seq: 0,
        head_hash: hex32(&format::GENESIS),
        first_bad: None,
        torn_tail: None,
        checkpoints_verified: 0,
        checkpoint_check: None,
        seconds: 0.0,
    };
    let scan = match scan {
        Ok(s) => s,
        Err(e) => {
            report.first_bad = Some(format!("cannot read the log in {}: {e}", dir.display()));
            return report;
        }
    };
    report.records = scan.records;
    report.bytes = scan.bytes;
    report.head_seq = scan.head_seq;
    report.head_hash = hex32(&scan.head_hash);
    report.first_bad = scan.bad.as_ref().map(|b| b.to_string());
    report.torn_tail = scan.torn_tail.as_ref().map(|(p, o)| {
        format!(
            "{} ends in a partly written record at byte {o}",
            p.display()
        )
    });
    let mut problems = Vec::new();
    let (sig_ok, sig_problems) = sig_check
        .join()
        .unwrap_or_else(|_| (0, vec!["checkpoint verification panicked".into()]));
    report.checkpoints_verified = sig_ok;
    problems.extend(sig_problems);
    match &checkpoints {
        Ok(cps) => {
            for c in cps {
                if c.seq > scan.head_seq && scan.bad.is_none() {
                    problems.push(format!(
                        "checkpoint {} names record {} but the log ends at {} (records were cut off)",
                        c.seq, c.seq, scan.head_seq
                    ));
                }
            }
        }
        Err(e) => problems.push(e.clone()),
    }
    // Where retention removed the start: the anchor must be signed by the log's key, and
    // checkpoints at it must agree with it.
    let anchor = checkpoint::load_anchor(dir);
    match &anchor {
        Ok(Some(a)) => {
            let key = checkpoints
                .as_ref()
                .ok()
                .and_then(|c| c.first())
                .map(|c| c.public_key.clone());
            if let Err(e) = checkpoint::verify_signature(a, key.as_deref()) {
                problems.push(format!("the retention anchor does not verify: {e}"));
            }
            let at_anchor = checkpoints
                .as_ref()
                .map(|cps| cps.iter().filter(|c| c.seq == a.seq).collect::<Vec<_>>())
                .unwrap_or_default();
            if at_anchor.iter().any(|c| c.hash != a.hash)
                || trusted.is_some_and(|c| c.seq == a.seq && c.hash != a.hash)
            {
                problems.push(format!(
                    "a checkpoint at record {} disagrees with the retention anchor there (the log was rewritten)",
                    a.seq
                ));
            }
        }
        Ok(None) => {}
        Err(e) => problems.push(e.clone()),
    }
    let anchor_seq = anchor.ok().flatten().map(|a| a.seq).unwrap_or(0);
    if let Some(c) = trusted {
        let check = match checkpoint::verify_signature(c, None) {
            Err(e) => Err(e),
            Ok(()) if c.seq > scan.head_seq => Err(format!(
                "your checkpoint names record {} but the log ends at {}: it was truncated or rolled back",
                c.seq, scan.head_seq
            )),
            Ok(()) => Ok(()),
        };
        report.checkpoint_check = Some(match &check {
            Ok(()) if c.seq < anchor_seq => format!(
                "your checkpoint names record {}, which retention removed (the log starts after the signed anchor at {}); the log continues past it",
                c.seq, anchor_seq
            ),
            Ok(()) => format!("record {} matches your checkpoint", c.seq),
            Err(e) => e.clone(),
        });
        if let Err(e) = check {
            problems.push(e);
        }
    }
    if let Some(m) = mismatch {
        problems.push(m.clone());
        if let Some(c) = trusted {
            report.checkpoint_check = Some(format!("record {}: {m}", c.seq));
        }
    }
    if report.first_bad.is_none() && !problems.is_empty() {
        report.first_bad = Some(problems.join("; "));
    }
    report.valid = report.first_bad.is_none();
    report.seconds = t.elapsed().as_secs_f64();
    report
}

#[cfg(test)]
mod tests;
