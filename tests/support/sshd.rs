//! An sshd for one test on 127.0.0.1 (its own host key, one client key, its own config),
//! and the client side as a user would set it up: an ssh config naming the host, the key
//! and a known_hosts file, used through `AGENFLEET_SSH_COMMAND="ssh -F CONFIG"`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Sshd {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
    /// The client's ssh config (Host `fleet-b` → this sshd).
    pub client_config: PathBuf,
}

fn keygen(path: &std::path::Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(ok.success(), "ssh-keygen {}", path.display());
}

impl Sshd {
    /// Starts it, or None (after saying the test skips — which CI does not allow) when
    /// this machine has no sshd or the test is not root (sshd must switch users).
    pub fn start(test: &str) -> Option<Sshd> {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !sshd.exists() || !root {
            let why = "no /usr/sbin/sshd, or not root (tests/run.sh installs openssh-server)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: {why}");
            }
            eprintln!("\n!!! SKIPPED {test}: {why} !!!\n");
            return None;
        }
        let dir = crate::tempdir("sshd");
        keygen(&dir.join("host_key"));
        keygen(&dir.join("id"));
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).expect("keys");
        // Privilege separation needs this directory (the package's service makes it).
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = crate::free_port();
        let d = dir.display();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
                 PidFile {d}/sshd.pid\nLogLevel VERBOSE\n"
            ),
        )
        .expect("sshd_config");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let client_config = dir.join("client_config");
        std::fs::write(
            &client_config,
            format!(
                "Host fleet-b\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n\
                 IdentityFile {d}/id\n  IdentitiesOnly yes\n\
                 UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking accept-new\n"
            ),
        )
        .expect("client config");
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("sshd.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start sshd");
        crate::wait_for(Duration::from_secs(10), "sshd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Some(Sshd {
            child,
            dir,
            port,
            client_config,
        })
    }

    /// `AGENFLEET_SSH_COMMAND` for this sshd.
    pub fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.client_config.display())
    }

    /// What sshd logged (for a failing test's message).
    pub fn log(&self) -> String {
        crate::read(&self.dir.join("sshd.log"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
