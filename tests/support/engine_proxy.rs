//! A Unix-socket proxy to the real Docker socket, to take the engine away from one
//! daemon and bring it back.

use std::path::{Path, PathBuf};

/// A Unix-socket proxy to the real Docker socket: the daemon's engine for tests that take
/// the engine away (stop the proxy) and bring it back (start it again) without touching
/// the real engine other tests use.
pub struct EngineProxy {
    pub path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

impl EngineProxy {
    pub fn start(path: &Path) -> EngineProxy {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind the engine proxy");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>> =
            Default::default();
        let (st, op) = (stop.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(engine) = std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
                else {
                    continue;
                };
                if let (Ok(mut o), Ok(c)) = (op.lock(), client.try_clone()) {
                    o.push(c);
                }
                let (Ok(mut c1), Ok(mut e1)) = (client.try_clone(), engine.try_clone()) else {
                    continue;
                };
                let (mut c2, mut e2) = (client, engine);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut e1);
                    let _ = e1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut e2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        EngineProxy {
            path: path.to_path_buf(),
            stop,
            open,
        }
    }

    /// The engine goes away: no new connections, and every open one is cut.
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
        if let Ok(mut o) = self.open.lock() {
            for s in o.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}
