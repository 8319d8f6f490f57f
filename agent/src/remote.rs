//! Swarm mode: the way from an agent's task to its gateway, and the daemon's endpoint.
//!
//! In the task (`start_if_remote`): where a container would find the gateway's three Unix
//! sockets bind-mounted from the daemon's host, the shim serves them itself, in a tmpfs at
//! the same place, and relays each connection over the agent's overlay network to the
//! daemon's gateway endpoint: first the line `AGF-GW1 <token> <channel>`, the token read
//! from the Swarm secret mounted for this agent alone, then the bytes both ways. The
//! program and the tools see the same sockets as on one host. Its output goes the same
//! way, on the `logs` channel (`output.rs`).
//!
//! The endpoint (`endpoint_main`, a container on the daemon's node joined to every
//! agent's overlay network): each TCP connection is handed to the daemon's endpoint
//! socket after the line `AGF-EP1 <the address it came in on>`, which tells the daemon
//! whose network it came from.
//!
//! Names are resolved by asking the engine's DNS server in the container (127.0.0.11)
//! directly: the static shim has no resolver library to load in a `FROM scratch` image.

use agenfleet_protocol::gateway::{
    ENDPOINT_HELLO, GATEWAY_DIR_IN_CONTAINER, GATEWAY_TOKEN_PATH, REMOTE_GATEWAY_ENV, REMOTE_HELLO,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The engine's DNS server inside a container on a user-defined network.
const ENGINE_DNS: &str = "127.0.0.11:53";

/// In a Swarm task (`AGENFLEET_GATEWAY_REMOTE` set): serves the gateway's sockets and
/// relays them to the endpoint; returns once they are listening. Exits the process when
/// it cannot (no token, no tmpfs): an agent that cannot reach its gateway fails closed.
pub fn start_if_remote(who: &str) {
    let Ok(spec) = std::env::var(REMOTE_GATEWAY_ENV) else {
        return;
    };
    let (addr, opts) = spec.split_once(';').unwrap_or((spec.as_str(), ""));
    let Some((host, port)) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        eprintln!("{who}: {REMOTE_GATEWAY_ENV}=`{spec}` is not HOST:PORT");
        std::process::exit(70);
    };
    let token = match std::fs::read_to_string(GATEWAY_TOKEN_PATH) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            eprintln!("{who}: no gateway token at {GATEWAY_TOKEN_PATH}; cannot reach the gateway");
            std::process::exit(70);
        }
    };
    let dir = PathBuf::from(GATEWAY_DIR_IN_CONTAINER);
    let mut channels = vec![
        ("gateway", agenfleet_protocol::gateway::GATEWAY_SOCKET_NAME),
        ("api", agenfleet_protocol::gateway::API_SOCKET_NAME),
    ];
    if opts.split(',').any(|o| o == "proxy") {
        channels.push(("proxy", agenfleet_protocol::gateway::PROXY_SOCKET_NAME));
    }
    let mut listeners = Vec::new();
    for (channel, file) in channels {
        let path = dir.join(file);
        let _ = std::fs::remove_file(&path);
        match std::os::unix::net::UnixListener::bind(&path) {
            Ok(l) => listeners.push((channel, l)),
            Err(e) => {
                eprintln!("{who}: cannot listen on {}: {e}", path.display());
                std::process::exit(70);
            }
        }
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("{who}: cannot start the gateway relay");
        std::process::exit(70);
    };
    // The output first: the program's first lines, and ours, go to the daemon too.
    crate::output::start(rt.handle(), host.clone(), port, token.clone(), who);
    std::thread::spawn(move || {
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for (channel, l) in listeners {
                if l.set_nonblocking(true).is_err() {
                    continue;
                }
                let Ok(l) = tokio::net::UnixListener::from_std(l) else {
                    continue;
                };
                let (host, token) = (host.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let Ok((unix, _)) = l.accept().await else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let line = format!("{REMOTE_HELLO} {token} {channel}\n");
                        let host = host.clone();
                        tokio::spawn(async move {
                            let Some(tcp) = dial(&host, port).await else {
                                return;
                            };
                            let mut tcp = tcp;
                            if tcp.write_all(line.as_bytes()).await.is_err() {
                                return;
                            }
                            agenfleet_protocol::relay::relay(tcp, unix).await;
                        });
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
}

/// The endpoint's address, once resolved (a connection that fails asks again: the
/// endpoint may have been made anew).
static RESOLVED: std::sync::Mutex<Option<Ipv4Addr>> = std::sync::Mutex::new(None);

/// A TCP connection to `host:port`, the name resolved by the engine's DNS server.
pub(crate) async fn dial(host: &str, port: u16) -> Option<tokio::net::TcpStream> {
    let cached = *RESOLVED.lock().unwrap_or_else(|p| p.into_inner());
    let ip = match (host.parse::<Ipv4Addr>(), cached) {
        (Ok(ip), _) => ip,
        (Err(_), Some(ip)) => ip,
        (Err(_), None) => resolve(host).await?,
    };
    match tokio::net::TcpStream::connect(SocketAddr::from((ip, port))).await {
        Ok(tcp) => {
            *RESOLVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(ip);
            let _ = tcp.set_nodelay(true);
            Some(tcp)
        }
        Err(e) => {
            *RESOLVED.lock().unwrap_or_else(|p| p.into_inner()) = None;
            eprintln!("agenfleet-agent: cannot reach the gateway at {host}:{port}: {e}");
            None
        }
    }
}

/// The first IPv4 address of `name`, asked of the engine's DNS server (one A query).
async fn resolve(name: &str) -> Option<Ipv4Addr> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    sock.connect(ENGINE_DNS).await.ok()?;
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let query = dns_query(id, name)?;
    for _ in 0..3 {
        sock.send(&query).await.ok()?;
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
            Ok(Ok(n)) => return dns_answer(id, &buf[..n]),
            _ => continue,
        }
    }
    eprintln!("agenfleet-agent: the engine's DNS did not answer for `{name}`");
    None
}

/// A DNS query for the A record of `name`.
fn dns_query(id: u16, name: &str) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    Some(q)
}

/// The first A record of an answer to query `id`.
fn dns_answer(id: u16, msg: &[u8]) -> Option<Ipv4Addr> {
    if msg.len() < 12 || msg[..2] != id.to_be_bytes() || msg[3] & 0x0f != 0 {
        return None;
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *msg.get(at)? as usize;
            if len == 0 {
                return Some(at + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            at += 1 + len;
        }
    };
    for _ in 0..questions {
        at = skip_name(at)? + 4;
    }
    for _ in 0..answers {
        at = skip_name(at)?;
        let typ = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let len = u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]) as usize;
        let data = msg.get(at + 10..at + 10 + len)?;
        if typ == 1 && len == 4 {
            return Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    None
}

/// `agenfleet-agent endpoint --listen ADDR --to SOCKET`: the daemon's gateway endpoint.
pub fn endpoint_main() -> i32 {
    let mut args = std::env::args().skip(2);
    let (mut listen, mut to) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next(),
            "--to" => to = args.next(),
            other => {
                eprintln!("agenfleet-agent endpoint: unknown argument `{other}`");
                return 64;
            }
        }
    }
    let (Some(listen), Some(to)) = (listen, to) else {
        eprintln!("usage: agenfleet-agent endpoint --listen ADDR --to SOCKET");
        return 64;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 70;
    };
    rt.block_on(async move {
        let l = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("agenfleet-agent endpoint: cannot listen on {listen}: {e}");
                return 70;
            }
        };
        eprintln!("agenfleet-agent endpoint: listening on {listen}, relaying to {to}");
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let Ok(local) = tcp.local_addr() else {
                continue;
            };
            let to = to.clone();
            tokio::spawn(async move {
                let Ok(mut unix) = tokio::net::UnixStream::connect(&to).await else {
                    return;
                };
                let line = format!("{ENDPOINT_HELLO} {}\n", local.ip());
                if unix.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                agenfleet_protocol::relay::relay(tcp, unix).await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_answer_gives_its_first_a_record() {
        let q = dns_query(7, "agenfleet-gateway").expect("query");
        assert_eq!(&q[..2], &[0, 7]);
        // The answer: the header (one question, one answer), the question, then an A
        // record whose name points back at the question's.
        let mut a = vec![0, 7, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        a.extend_from_slice(&q[12..]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 231, 3, 4]);
        assert_eq!(dns_answer(7, &a), Some(Ipv4Addr::new(10, 231, 3, 4)));
        // Another query's answer, or an error, gives nothing.
        assert_eq!(dns_answer(8, &a), None);
        let mut err = a.clone();
        err[3] = 0x83;
        assert_eq!(dns_answer(7, &err), None);
        assert_eq!(dns_answer(7, &a[..20]), None);
        assert!(dns_query(1, "bad..name").is_none());
    }
}
