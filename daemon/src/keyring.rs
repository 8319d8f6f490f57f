//! The OS keyring: where the daemon keeps keys that must never sit next to its data.
//! On Linux this is the kernel keyring (keyutils) through the keyring crates. The daemon
//! joins a session keyring of its own at start (as systemd's `KeyringMode=private` does):
//! a process without one cannot add keys, and keys stored through the store are also
//! linked into the uid's persistent keyring, where the next daemon process finds them.

use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the OS keyring is not available: {0}")]
    Unavailable(String),
    #[error("keyring entry `{0}` holds a key of the wrong size ({1} bytes)")]
    BadKey(String, usize),
}

static INIT: OnceLock<Result<(), String>> = OnceLock::new();

/// Joins a fresh session keyring and selects the keyutils store. Idempotent. Call it
/// before starting threads: a session keyring belongs to the thread that joins it and to
/// the threads it starts afterwards.
pub fn init() -> Result<(), KeyError> {
    INIT.get_or_init(|| {
        // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) takes no pointers we own.
        let rc = unsafe { libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, 0 as libc::c_long) };
        if rc < 0 {
            return Err(format!(
                "cannot join a session keyring: {}",
                std::io::Error::last_os_error()
            ));
        }
        let store = linux_keyutils_keyring_store::Store::new()
            .map_err(|e| format!("cannot open the kernel keyring store: {e}"))?;
        keyring_core::set_default_store(store);
        Ok(())
    })
    .clone()
    .map_err(KeyError::Unavailable)
}

/// For unit tests, which `cargo test` runs on many threads: gives the calling thread a
/// session keyring of its own (the daemon does this once, before any thread exists).
#[cfg(test)]
pub fn join_for_this_thread() -> Result<(), KeyError> {
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) takes no pointers we own.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, 0 as libc::c_long) };
    if rc < 0 {
        return Err(KeyError::Unavailable(format!(
            "cannot join a session keyring: {}",
            std::io::Error::last_os_error()
        )));
    }
    init()
}

/// The `len`-byte secret stored under `name`, created with `make` when absent.
pub fn load_or_create(
    name: &str,
    len: usize,
    make: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>, KeyError> {
    init()?;
    let entry = keyring_core::Entry::new("agenfleet", name)
        .map_err(|e| KeyError::Unavailable(format!("entry {name}: {e}")))?;
    match entry.get_secret() {
        Ok(s) if s.len() == len => Ok(s),
        Ok(s) => Err(KeyError::BadKey(name.to_string(), s.len())),
        Err(keyring_core::Error::NoEntry) => {
            let s = make();
            entry
                .set_secret(&s)
                .map_err(|e| KeyError::Unavailable(format!("cannot store {name}: {e}")))?;
            // Read it back: a store that silently drops keys must not pass.
            match entry.get_secret() {
                Ok(back) if back == s => Ok(s),
                Ok(_) => Err(KeyError::Unavailable(format!(
                    "{name} reads back different"
                ))),
                Err(e) => Err(KeyError::Unavailable(format!(
                    "{name} cannot be read back: {e}"
                ))),
            }
        }
        Err(e) => Err(KeyError::Unavailable(format!("cannot read {name}: {e}"))),
    }
}

fn entry(name: &str) -> Result<keyring_core::Entry, KeyError> {
    init()?;
    keyring_core::Entry::new("agenfleet", name)
        .map_err(|e| KeyError::Unavailable(format!("entry {name}: {e}")))
}

/// The secret under `name`, or None when the keyring has no such entry.
pub fn get(name: &str) -> Result<Option<Vec<u8>>, KeyError> {
    match entry(name)?.get_secret() {
        Ok(s) => Ok(Some(s)),
        Err(keyring_core::Error::NoEntry) => Ok(None),
        Err(e) => Err(KeyError::Unavailable(format!("cannot read {name}: {e}"))),
    }
}

/// Stores `secret` under `name` (replacing any value) and reads it back.
pub fn set(name: &str, secret: &[u8]) -> Result<(), KeyError> {
    let e = entry(name)?;
    e.set_secret(secret)
        .map_err(|err| KeyError::Unavailable(format!("cannot store {name}: {err}")))?;
    match e.get_secret() {
        Ok(back) if back == secret => Ok(()),
        Ok(_) => Err(KeyError::Unavailable(format!(
            "{name} reads back different"
        ))),
        Err(err) => Err(KeyError::Unavailable(format!(
            "{name} cannot be read back: {err}"
        ))),
    }
}

/// Removes `name` from the keyring (no error if absent).
pub fn delete(name: &str) -> Result<(), KeyError> {
    match entry(name)?.delete_credential() {
        Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
        Err(e) => Err(KeyError::Unavailable(format!("cannot delete {name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_started_after_init_can_use_the_keyring() {
        init().unwrap();
        let name = format!("test-thread-{}", rand::random::<u32>());
        let n2 = name.clone();
        let r = std::thread::spawn(move || set(&n2, b"0123456789abcdef0123456789abcdef"))
            .join()
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let n3 = name.clone();
        let r = rt.block_on(async move { tokio::spawn(async move { get(&n3) }).await.unwrap() });
        assert_eq!(r.unwrap().unwrap().len(), 32);
        delete(&name).unwrap();
    }
}
