//! The backup archive: a plain ustar file (`tar tvf` lists it) whose last two entries
//! are the manifest (each file's size and SHA-256) and the manifest's own SHA-256.
//! `Stream` writes it lazily, chunk by chunk, from files on disk and bytes in memory —
//! no second copy on the daemon's disk — hashing as it goes; `read` takes it apart
//! strictly (header checksums, zero padding, nothing after the end) into a directory and
//! checks every file against the manifest, naming the first that does not match.

use agenfleet_protocol::backup::{BackupFile, BackupManifest, MANIFEST_DIGEST_NAME, MANIFEST_NAME};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

const BLOCK: usize = 512;
/// The end of a tar archive: two zero blocks.
const TRAILER: usize = 2 * BLOCK;
/// Largest manifest a restore reads (200 agents and a 1 GB log make ~4 KB).
const MAX_MANIFEST: u64 = 16 * 1024 * 1024;

/// Where an entry's bytes come from.
pub enum Source {
    /// The first `len` bytes of a file opened when the backup was fixed (an audit segment
    /// is cut where the backup's checkpoint ends; one that retention removes meanwhile
    /// stays readable through this handle).
    File {
        file: File,
        len: u64,
    },
    Bytes(Vec<u8>),
}

pub struct Item {
    pub name: String,
    pub source: Source,
}

impl Item {
    /// The first `len` bytes of the file at `path`, opened now.
    pub fn file(name: String, path: &std::path::Path, len: u64) -> std::io::Result<Item> {
        let file = File::open(path)?;
        let have = file.metadata()?.len();
        if have < len {
            return Err(std::io::Error::other(format!(
                "{} holds {have} bytes, fewer than the {len} the backup fixed",
                path.display()
            )));
        }
        Ok(Item {
            name,
            source: Source::File { file, len },
        })
    }

    fn len(&self) -> u64 {
        match &self.source {
            Source::File { len, .. } => *len,
            Source::Bytes(b) => b.len() as u64,
        }
    }
}

fn padding(len: u64) -> usize {
    (BLOCK - (len % BLOCK as u64) as usize) % BLOCK
}

fn header(name: &str, len: u64, mtime: u64) -> std::io::Result<[u8; BLOCK]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(len);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; BLOCK];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

fn hex_digest(h: Sha256) -> String {
    hex::encode(h.finalize())
}

enum Body {
    File(File),
    Bytes(Vec<u8>, usize),
}

struct Current {
    name: String,
    len: u64,
    header: [u8; BLOCK],
    header_sent: usize,
    body: Body,
    body_left: u64,
    pad_left: usize,
    hasher: Sha256,
    manifest_entry: bool,
}

/// Writes the archive on demand: `fill` appends its next bytes to a buffer.
pub struct Stream {
    items: VecDeque<Item>,
    manifest: BackupManifest,
    manifest_emitted: bool,
    cur: Option<Current>,
    trailer_left: usize,
    mtime: u64,
    pos: u64,
    total: u64,
    /// The manifest's SHA-256 once it is made (it pins every file's).
    digest: Option<String>,
}

/// The manifest's bytes as stored (pretty JSON, with a final newline).
fn manifest_bytes(m: &BackupManifest) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(m).unwrap_or_default();
    b.push(b'\n');
    b
}

impl Stream {
    /// `manifest` is the template: its `files` are filled in as the items go by.
    pub fn new(items: Vec<Item>, mut manifest: BackupManifest) -> Stream {
        // Every digest is 64 hex digits, so a manifest with placeholders has the size
        // of the real one: the archive's size is known before its first byte.
        manifest.files = items
            .iter()
            .map(|i| BackupFile {
                name: i.name.clone(),
                bytes: i.len(),
                sha256: "0".repeat(64),
            })
            .collect();
        let mlen = manifest_bytes(&manifest).len() as u64;
        let entry = |len: u64| BLOCK as u64 + len + padding(len) as u64;
        let total = items.iter().map(|i| entry(i.len())).sum::<u64>()
            + entry(mlen)
            + entry(65)
            + TRAILER as u64;
        manifest.files.clear();
        Stream {
            items: items.into(),
            mtime: manifest.created_ms / 1000,
            manifest,
            manifest_emitted: false,
            cur: None,
            trailer_left: TRAILER,
            pos: 0,
            total,
            digest: None,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The manifest's SHA-256, once the manifest is made (near the end). The whole
    /// archive is not hashed here: its caller does that on its side, and every file is
    /// checked against the manifest at restore.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    fn start(&mut self, item: Item, manifest_entry: bool) -> std::io::Result<()> {
        let len = item.len();
        let body = match item.source {
            Source::File { file, .. } => Body::File(file),
            Source::Bytes(b) => Body::Bytes(b, 0),
        };
        self.cur = Some(Current {
            header: header(&item.name, len, self.mtime)?,
            name: item.name,
            len,
            header_sent: 0,
            body,
            body_left: len,
            pad_left: padding(len),
            hasher: Sha256::new(),
            manifest_entry,
        });
        Ok(())
    }

    /// Appends the archive's next bytes to `out` until it holds `max` bytes or the
    /// archive ends. Answers whether the archive has ended.
    pub fn fill(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
        let begin = out.len();
        let done = self.fill_inner(out, max)?;
        self.pos += (out.len() - begin) as u64;
        Ok(done)
    }

    fn fill_inner(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
        while out.len() < max {
            let room = max - out.len();
            let Some(cur) = self.cur.as_mut() else {
                if let Some(item) = self.items.pop_front() {
                    self.start(item, false)?;
                } else if !self.manifest_emitted {
                    self.manifest_emitted = true;
                    let m = manifest_bytes(&self.manifest);
                    let digest = hex::encode(Sha256::digest(&m));
                    let mut d = digest.clone();
                    d.push('\n');
                    self.digest = Some(digest);
                    self.items.push_back(Item {
                        name: MANIFEST_DIGEST_NAME.into(),
                        source: Source::Bytes(d.into_bytes()),
                    });
                    self.start(
                        Item {
                            name: MANIFEST_NAME.into(),
                            source: Source::Bytes(m),
                        },
                        true,
                    )?;
                } else if self.trailer_left > 0 {
                    let n = room.min(self.trailer_left);
                    out.resize(out.len() + n, 0);
                    self.trailer_left -= n;
                } else {
                    return Ok(true);
                }
                continue;
            };
            if cur.header_sent < BLOCK {
                let n = room.min(BLOCK - cur.header_sent);
                out.extend_from_slice(&cur.header[cur.header_sent..cur.header_sent + n]);
                cur.header_sent += n;
            } else if cur.body_left > 0 {
                let n = (room as u64).min(cur.body_left) as usize;
                let at = out.len();
                match &mut cur.body {
                    Body::File(f) => {
                        out.resize(at + n, 0);
                        f.read_exact(&mut out[at..]).map_err(|e| {
                            std::io::Error::other(format!("reading {}: {e}", cur.name))
                        })?;
                    }
                    Body::Bytes(b, off) => {
                        out.extend_from_slice(&b[*off..*off + n]);
                        *off += n;
                    }
                }
                cur.hasher.update(&out[at..]);
                cur.body_left -= n as u64;
            } else if cur.pad_left > 0 {
                let n = room.min(cur.pad_left);
                out.resize(out.len() + n, 0);
                cur.pad_left -= n;
            } else {
                let Some(done) = self.cur.take() else {
                    continue;
                };
                if !done.manifest_entry && done.name != MANIFEST_DIGEST_NAME {
                    self.manifest.files.push(BackupFile {
                        name: done.name,
                        bytes: done.len,
                        sha256: hex_digest(done.hasher),
                    });
                }
            }
        }
        Ok(self.cur.is_none()
            && self.items.is_empty()
            && self.manifest_emitted
            && self.trailer_left == 0)
    }
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive is damaged: {0}")]
    Damaged(String),
    #[error("cannot write the restored files: {0}")]
    Io(String),
}

fn damaged(s: impl Into<String>) -> ArchiveError {
    ArchiveError::Damaged(s.into())
}

/// Names an archive may hold: relative, plain (letters, digits, `._-`), two levels of
/// directory at most (`memory/<tenant>/<agent>.db`), never `.` or `..`.
fn safe_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// What reading an entry names it by: its name, or its position before the name is known.
fn where_(index: usize, after: Option<&str>) -> String {
    match after {
        Some(prev) => format!("entry {} (after {prev})", index + 1),
        None => format!("entry {} (the first)", index + 1),
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Unpacks an archive into `dest` (an empty directory) and checks every file against
/// the manifest; answers the manifest. Refuses at the first problem, naming it. Nothing
/// is synced to disk here: the caller does that once the whole is judged good.
pub fn read(mut r: impl Read, dest: &Path) -> Result<BackupManifest, ArchiveError> {
    let io = |e: std::io::Error| ArchiveError::Io(e.to_string());
    let mut seen: Vec<BackupFile> = Vec::new();
    let mut manifest: Option<Vec<u8>> = None;
    let mut manifest_digest: Option<Vec<u8>> = None;
    let mut block = [0u8; BLOCK];
    let mut buf = vec![0u8; 256 * 1024];
    let mut index = 0usize;
    loop {
        let prev = seen
            .last()
            .map(|f| f.name.clone())
            .or_else(|| manifest.as_ref().map(|_| MANIFEST_NAME.to_string()));
        let got = read_full(&mut r, &mut block).map_err(io)?;
        if got == 0 {
            return Err(damaged(format!(
                "it ends without the end-of-archive blocks, at {} (truncated?)",
                where_(index, prev.as_deref())
            )));
        }
        if got < BLOCK {
            return Err(damaged(format!(
                "it ends inside the header of {} (truncated?)",
                where_(index, prev.as_deref())
            )));
        }
        if block.iter().all(|b| *b == 0) {
            // The end: a second zero block, then nothing but zeros.
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).map_err(io)?;
            if rest.len() < BLOCK || rest.iter().any(|b| *b != 0) {
                return Err(damaged(format!(
                    "the end-of-archive blocks after {} are not all zero",
                    prev.unwrap_or_default()
                )));
            }
            break;
        }
        let h = tar::Header::from_byte_slice(&block);
        let stored = h.cksum().map_err(|_| {
            damaged(format!(
                "the header of {} has an unreadable checksum",
                where_(index, prev.as_deref())
            ))
        })?;
        let computed: u32 = block
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    *b as u32
                }
            })
            .sum();
        if stored != computed {
            return Err(damaged(format!(
                "the header of {} fails its checksum",
                where_(index, prev.as_deref())
            )));
        }
        let name = String::from_utf8_lossy(&h.path_bytes()).to_string();
        if h.entry_type() != tar::EntryType::Regular || !safe_name(&name) {
            return Err(damaged(format!(
                "{} is `{name}`, not a file this archive format holds",
                where_(index, prev.as_deref())
            )));
        }
        let len = h
            .size()
            .map_err(|_| damaged(format!("the header of {name} has an unreadable size")))?;
        if seen.iter().any(|f| f.name == name)
            || (name == MANIFEST_NAME && manifest.is_some())
            || (name == MANIFEST_DIGEST_NAME && manifest_digest.is_some())
        {
            return Err(damaged(format!("{name} appears twice")));
        }
        let in_memory = name == MANIFEST_NAME || name == MANIFEST_DIGEST_NAME;
        if in_memory && len > MAX_MANIFEST {
            return Err(damaged(format!("{name} announces {len} bytes")));
        }
        let mut file = if in_memory {
            None
        } else {
            let path = dest.join(&name);
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
            Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| ArchiveError::Io(format!("{}: {e}", path.display())))?,
            )
        };
        let mut kept = Vec::new();
        let mut hasher = Sha256::new();
        let mut left = len;
        while left > 0 {
            let n = (buf.len() as u64).min(left) as usize;
            let got = read_full(&mut r, &mut buf[..n]).map_err(io)?;
            if got < n {
                return Err(damaged(format!(
                    "it ends inside {name} ({} of {len} bytes; truncated?)",
                    len - left + got as u64
                )));
            }
            hasher.update(&buf[..n]);
            match &mut file {
                Some(f) => f.write_all(&buf[..n]).map_err(io)?,
                None => kept.extend_from_slice(&buf[..n]),
            }
            left -= n as u64;
        }
        let pad = padding(len);
        if pad > 0 {
            let got = read_full(&mut r, &mut buf[..pad]).map_err(io)?;
            if got < pad || buf[..pad].iter().any(|b| *b != 0) {
                return Err(damaged(format!("the padding after {name} is not zeros")));
            }
        }
        match name.as_str() {
            MANIFEST_NAME => manifest = Some(kept),
            MANIFEST_DIGEST_NAME => manifest_digest = Some(kept),
            _ => seen.push(BackupFile {
                name,
                bytes: len,
                sha256: hex_digest(hasher),
            }),
        }
        index += 1;
    }
    let (Some(mbytes), Some(mdigest)) = (manifest, manifest_digest) else {
        return Err(damaged(format!(
            "it has no {MANIFEST_NAME} with its {MANIFEST_DIGEST_NAME} (not an AgenFleet backup?)"
        )));
    };
    if format!("{}\n", hex::encode(Sha256::digest(&mbytes))).as_bytes() != mdigest {
        return Err(damaged(format!(
            "{MANIFEST_NAME} does not match its SHA-256 in {MANIFEST_DIGEST_NAME}"
        )));
    }
    let m: BackupManifest = serde_json::from_slice(&mbytes)
        .map_err(|e| damaged(format!("{MANIFEST_NAME} does not parse: {e}")))?;
    if m.format != agenfleet_protocol::backup::BACKUP_FORMAT {
        return Err(damaged(format!(
            "its format is `{}`, not `{}`",
            m.format,
            agenfleet_protocol::backup::BACKUP_FORMAT
        )));
    }
    for f in &m.files {
        match seen.iter().find(|s| s.name == f.name) {
            None => {
                return Err(damaged(format!(
                    "{} is in the manifest but not in the archive",
                    f.name
                )))
            }
            Some(s) if s.bytes != f.bytes => {
                return Err(damaged(format!(
                    "{} holds {} bytes; the manifest says {}",
                    f.name, s.bytes, f.bytes
                )))
            }
            Some(s) if s.sha256 != f.sha256 => {
                return Err(damaged(format!(
                    "{} does not match its SHA-256 in the manifest",
                    f.name
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen
        .iter()
        .find(|s| !m.files.iter().any(|f| f.name == s.name))
    {
        return Err(damaged(format!(
            "{} is in the archive but not in the manifest",
            extra.name
        )));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> BackupManifest {
        BackupManifest {
            format: agenfleet_protocol::backup::BACKUP_FORMAT.into(),
            software_version: "test".into(),
            instance_id: "i".into(),
            created_ms: 1_700_000_000_000,
            checkpoint: agenfleet_protocol::Checkpoint {
                seq: 1,
                hash: "00".repeat(32),
                time_ms: 1,
                public_key: String::new(),
                signature: String::new(),
            },
            config_source: None,
            files: vec![],
            tenant: None,
        }
    }

    fn archive(dir: &Path) -> Vec<u8> {
        let seg = dir.join("seg");
        std::fs::write(&seg, vec![7u8; 3000]).unwrap();
        let items = vec![
            Item {
                name: "agenfleet.db".into(),
                source: Source::Bytes(b"db bytes".to_vec()),
            },
            // Only the first 2049 bytes: the cut.
            Item::file("audit/0001.seg".into(), &seg, 2049).unwrap(),
        ];
        let mut s = Stream::new(items, manifest());
        let total = s.total();
        let mut out = Vec::new();
        // Small, odd chunks cross every boundary.
        loop {
            let max = out.len() + 333;
            if s.fill(&mut out, max).unwrap() {
                break;
            }
        }
        assert_eq!(out.len() as u64, total, "the size announced up front");
        // The manifest's digest, as the archive's last entry holds it.
        let d = s.digest().unwrap().to_string();
        let tail = String::from_utf8_lossy(&out[out.len() - 1024 - 512..out.len() - 1024]);
        assert!(tail.starts_with(&format!("{d}\n")), "{d} / {tail}");
        out
    }

    #[test]
    fn an_archive_round_trips_and_tar_can_list_it() {
        let t = tempfile::tempdir().unwrap();
        let bytes = archive(t.path());
        let names: Vec<String> = tar::Archive::new(&bytes[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "agenfleet.db",
                "audit/0001.seg",
                MANIFEST_NAME,
                MANIFEST_DIGEST_NAME
            ]
        );
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let m = read(&bytes[..], &out).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(
            std::fs::read(out.join("agenfleet.db")).unwrap(),
            b"db bytes"
        );
        assert_eq!(
            std::fs::read(out.join("audit/0001.seg")).unwrap(),
            vec![7u8; 2049]
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let bytes = archive(t.path());
        // Every byte of the archive, header, body, padding, manifest and trailer alike.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let out = t.path().join(format!("o{i}"));
            std::fs::create_dir(&out).unwrap();
            match read(&bad[..], &out) {
                Err(ArchiveError::Damaged(_)) => {}
                other => panic!("byte {i} flipped: {:?}", other.map(|m| m.files)),
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
    }

    #[test]
    fn a_damaged_file_is_named() {
        let t = tempfile::tempdir().unwrap();
        let mut bytes = archive(t.path());
        // The segment's body starts after the db entry (512 + 512) and its header (512).
        bytes[1536 + 100] ^= 0xff;
        let out = t.path().join("o");
        std::fs::create_dir(&out).unwrap();
        let e = read(&bytes[..], &out).unwrap_err().to_string();
        assert!(e.contains("audit/0001.seg") && e.contains("SHA-256"), "{e}");
        // A truncated archive is named as such.
        let out2 = t.path().join("o2");
        std::fs::create_dir(&out2).unwrap();
        let e = read(&bytes[..2000], &out2).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn unsafe_names_are_refused() {
        for n in [
            "../x",
            "/etc/passwd",
            "a/b/c/d",
            "a/../b",
            "a/./b",
            ".",
            "a b",
            "a//b",
        ] {
            assert!(!safe_name(n), "{n}");
        }
        for n in [
            "agenfleet.db",
            "audit/00000000000000000001.seg",
            "agenfleetd.toml",
            "memory/acme/a1.db",
        ] {
            assert!(safe_name(n), "{n}");
        }
    }
}
