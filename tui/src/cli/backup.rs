//! `agenfleet backup --out FILE`: asks the daemon for a consistent snapshot and streams
//! the archive into FILE (created 0600, written as `FILE.partial` and renamed when whole,
//! or `-` for stdout), writing one chunk while the next is on its way and starting the
//! disk writes behind it, and checks it arrived whole. Its fingerprint is the manifest's
//! SHA-256 (the manifest holds every file's). Restore with `agenfleetd restore`.

use super::Out;
use crate::client::{CliError, Conn};
use agenfleet_protocol::backup::MAX_BACKUP_CHUNK;
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Local file errors (sysexits: cannot create, I/O).
const EXIT_CANTCREAT: i32 = 73;
const EXIT_IOERR: i32 = 74;

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Where to write the archive (must not exist; `-` for stdout).
    #[arg(long, short)]
    pub out: PathBuf,
    /// One dedicated tenant alone (its database and the vault's wrapped keys its secrets
    /// need), to restore into a fresh daemon with `agenfleetd restore`.
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Serialize)]
struct Written {
    file: String,
    id: String,
    bytes: u64,
    files: u32,
    /// The SHA-256 of the archive's manifest, which holds every file's: the backup's
    /// fingerprint (`tar xOf FILE manifest.json | sha256sum` gives it again).
    manifest_sha256: String,
    instance_id: String,
    checkpoint: agenfleet_protocol::Checkpoint,
    prepare_ms: u64,
    seconds: f64,
    /// A dedicated tenant's archive: the tenant, and the recovery key of the vault made
    /// for it (shown once here, kept nowhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_key: Option<String>,
}

fn ioerr(what: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::new(EXIT_IOERR, "io", format!("{}: {e}", what.display()))
}

pub async fn run(conn: &Conn, out: &Out, args: &BackupArgs) -> Result<(), CliError> {
    let to_stdout = args.out.as_os_str() == "-";
    let partial = {
        let mut p = args.out.clone().into_os_string();
        p.push(".partial");
        PathBuf::from(p)
    };
    let file: Sink = if to_stdout {
        Box::new(std::io::stdout())
    } else {
        if args.out.exists() {
            return Err(CliError::new(
                EXIT_CANTCREAT,
                "exists",
                format!(
                    "{} exists: give a new file (a backup never overwrites one)",
                    args.out.display()
                ),
            ));
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| {
                CliError::new(
                    EXIT_CANTCREAT,
                    "io",
                    format!("cannot create {}: {e}", partial.display()),
                )
            })?;
        Box::new(WriteBehind {
            file: f,
            written: 0,
            started: 0,
        })
    };
    let (mut file, result) = stream(
        conn,
        file,
        args.tenant.clone(),
        super::progress::Bar::new(out),
    )
    .await;
    let Streamed {
        info,
        manifest_sha256,
        seconds,
    } = match result {
        Ok(r) => r,
        Err(e) => {
            drop(file);
            if !to_stdout {
                let _ = std::fs::remove_file(&partial);
            }
            return Err(e);
        }
    };
    file.flush().map_err(ioerr(&args.out))?;
    drop(file);
    if !to_stdout {
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .and_then(|_| std::fs::rename(&partial, &args.out))
            .map_err(ioerr(&args.out))?;
        if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
    }
    let w = Written {
        file: args.out.display().to_string(),
        id: info.id,
        bytes: info.bytes,
        files: info.files,
        manifest_sha256,
        instance_id: info.instance_id,
        checkpoint: info.checkpoint,
        prepare_ms: info.prepare_ms,
        seconds,
        tenant: args.tenant.clone(),
        recovery_key: info
            .recovery_key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k.expose()).to_string()),
    };
    let human = || {
        if let (Some(t), Some(k)) = (&w.tenant, &w.recovery_key) {
            return format!(
                "backup {} of tenant {t} alone written to {}: {:.1} MB, {} files, {:.2} s; manifest sha256 {}\n\
                 the source's audit log stood at record {} (its records of {t} stay there)\n\
                 Its vault is its own. Recovery key (shown once, kept nowhere — store it apart from the archive):\n  {k}\n\
                 Restore into a fresh daemon: agenfleetd restore {} --state-dir DIR, start it, then `agenfleet vault unseal` with that key",
                w.id,
                w.file,
                w.bytes as f64 / 1e6,
                w.files,
                w.seconds,
                w.manifest_sha256,
                w.checkpoint.seq,
                w.file
            );
        }
        format!(
            "backup {} written to {}: {:.1} MB, {} files, {:.2} s ({:.0} MB/s; snapshot fixed in {} ms)\n\
             manifest sha256 {} (every file's SHA-256 is in the manifest)\n\
             audit log up to record {} (checkpoint hash {}…, signed by {}…)\n\
             Restore: agenfleetd restore {} --state-dir DIR   (the vault opens with the recovery key)",
            w.id,
            w.file,
            w.bytes as f64 / 1e6,
            w.files,
            w.seconds,
            w.bytes as f64 / 1e6 / w.seconds.max(1e-6),
            w.prepare_ms,
            w.manifest_sha256,
            w.checkpoint.seq,
            &w.checkpoint.hash[..w.checkpoint.hash.len().min(16)],
            &w.checkpoint.public_key[..w.checkpoint.public_key.len().min(16)],
            w.file
        )
    };
    if to_stdout {
        // The archive is on stdout: the summary goes to stderr.
        if out.json {
            eprintln!("{}", serde_json::to_string(&w).unwrap_or_default());
        } else {
            eprintln!("{}", human());
        }
        Ok(())
    } else {
        out.print(&w, human)
    }
}

type Sink = Box<dyn Write + Send>;

/// A backup streamed whole.
struct Streamed {
    info: agenfleet_protocol::BackupInfo,
    /// Of its manifest, as the daemon made it (it pins every file's).
    manifest_sha256: String,
    seconds: f64,
}

/// Writes the archive and starts the disk writing behind it every few MB, so that the
/// final sync finds little left to do (the copy and the disk overlap).
struct WriteBehind {
    file: std::fs::File,
    written: u64,
    /// Where writeback was last started up to.
    started: u64,
}

const WRITE_BEHIND: u64 = 16 * 1024 * 1024;

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITE_BEHIND {
            use std::os::fd::AsRawFd;
            // SAFETY: sync_file_range on our own open descriptor; it only starts writeback
            // of the range (no wait), and a failure just leaves it to the final sync.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as i64,
                    (self.written - self.started) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `data` on a blocking thread (while the next chunk is on its way), handing the
/// sink back.
async fn write_chunk(mut out: Sink, data: Vec<u8>) -> (Sink, std::io::Result<()>) {
    match tokio::task::spawn_blocking(move || {
        let r = out.write_all(&data);
        (out, r)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => (Box::new(std::io::sink()), Err(std::io::Error::other(e))),
    }
}

/// Streams the archive into `file`; answers the backup, its manifest's SHA-256 and the
/// seconds it took. Each chunk is written while the next one is asked for (the daemon
/// reads ahead on its side too).
async fn stream(
    conn: &Conn,
    file: Sink,
    tenant: Option<String>,
    mut bar: super::progress::Bar,
) -> (Sink, Result<Streamed, CliError>) {
    let started = std::time::Instant::now();
    let info = match conn.client.backup_create(conn.ctx(), tenant).await {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return (file, Err(e.into())),
        Err(e) => return (file, Err(e.into())),
    };
    let io_err =
        |e: std::io::Error| CliError::new(EXIT_IOERR, "io", format!("writing the archive: {e}"));
    let mut out = file;
    let mut offset = 0u64;
    let mut pending: Option<Vec<u8>> = None;
    let manifest_sha = loop {
        let ask = conn
            .client
            .backup_read(conn.ctx(), info.id.clone(), offset, MAX_BACKUP_CHUNK);
        let (reply, written) = match pending.take() {
            Some(data) => {
                let (reply, (o, written)) =
                    futures::future::join(ask, write_chunk(out, data)).await;
                out = o;
                (reply, written)
            }
            None => (ask.await, Ok(())),
        };
        if let Err(e) = written {
            return (out, Err(io_err(e)));
        }
        let chunk = match reply {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return (out, Err(e.into())),
            Err(e) => return (out, Err(e.into())),
        };
        if chunk.offset != offset {
            let e = CliError::new(
                70,
                "internal",
                format!("the daemon sent offset {}, expected {offset}", chunk.offset),
            );
            return (out, Err(e));
        }
        offset += chunk.data.len() as u64;
        bar.draw(super::progress::line(
            "backup",
            offset as f64 / info.bytes.max(1) as f64,
            &format!(
                "{} of {}",
                crate::fmt::bytes(offset),
                crate::fmt::bytes(info.bytes)
            ),
        ));
        if chunk.done {
            let (o, written) = write_chunk(out, chunk.data).await;
            out = o;
            if let Err(e) = written {
                return (out, Err(io_err(e)));
            }
            break chunk.sha256;
        }
        pending = Some(chunk.data);
    };
    if offset != info.bytes {
        let e = CliError::new(
            70,
            "internal",
            format!(
                "the archive arrived short: {offset} of the {} bytes announced",
                info.bytes
            ),
        );
        return (out, Err(e));
    }
    let done = Streamed {
        info,
        manifest_sha256: manifest_sha.unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
    };
    (out, Ok(done))
}
