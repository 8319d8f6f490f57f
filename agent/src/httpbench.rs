//! `agenfleet-agent http-bench`: a load generator for the egress benchmarks, run the same
//! way inside an agent's container (through its egress proxy) and on the host (directly),
//! so the two sides differ only by the path the bytes take.
//!
//! `http-bench get URL N [--proxy HOST:PORT] [--conns C] [--start-at UNIX_MS]`: N GETs,
//! each on a new connection (the proxy serves one request per connection), C connections
//! at a time; with `--start-at`, the first one at that wall-clock time (so generators
//! started one by one — `docker exec` takes a while — run at once); prints one JSON line:
//! {"n", "ok", "secs", "p50_us", "p99_us", "start_ms", "end_ms", "late"}.
//! `http-bench connect HOST:PORT BYTES [--proxy HOST:PORT]`: opens a tunnel (or a direct
//! connection), reads BYTES and prints {"bytes", "secs"}.
//! `http-bench post URL N BODY [--start-at UNIX_MS] [--method M]`: N POSTs (or M: `GET`,
//! `PUT`…) of the JSON text BODY, one after the other on one keep-alive connection (as an
//! SDK does); prints the `get` line plus `fb50_us`/`fb99_us`, the time to the answer's
//! first byte.
//!
//! Also here, the other small HTTP client of the shim: `health-http PORT PATH`, the probe
//! the engine runs for a `[health] http` check.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn one_get(url: &str, proxy: Option<&str>) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = proxy.unwrap_or(authority);
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let target = if proxy.is_some() {
        url.to_string()
    } else {
        format!("/{path}")
    };
    // One write: a server that reads the request once must get all of it.
    let req = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(4096);
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if buf.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&buf[..buf.len().min(200)]).to_string())
    }
}

/// Reads one answer (its head, then a `content-length` or chunked body) off a keep-alive
/// connection; answers (status line ok, µs until its first byte).
fn read_answer(s: &mut std::io::BufReader<TcpStream>, t0: Instant) -> Result<(bool, f64), String> {
    use std::io::BufRead;
    let mut status = String::new();
    if s.read_line(&mut status).map_err(|e| e.to_string())? == 0 {
        return Err("the server closed the connection".into());
    }
    let first = t0.elapsed().as_secs_f64() * 1e6;
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        s.read_line(&mut h).map_err(|e| e.to_string())?;
        let h = h.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if h.starts_with("transfer-encoding:") && h.contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            s.read_line(&mut size).map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            let mut chunk = vec![0u8; n + 2];
            s.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    Ok((status.starts_with("HTTP/1.1 200"), first))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// With `--start-at UNIX_MS`, sleeps until then; answers whether that time had passed
/// already (the generator started late).
fn wait_for_start(args: &[String]) -> bool {
    let start_at: Option<u64> = flag(args, "--start-at").and_then(|s| s.parse().ok());
    let late = start_at.is_some_and(|at| now_ms() > at);
    if let Some(at) = start_at {
        std::thread::sleep(std::time::Duration::from_millis(
            at.saturating_sub(now_ms()),
        ));
    }
    late
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let proxy = flag(&args, "--proxy");
    match args.first().map(String::as_str) {
        Some("get") => {
            let (Some(url), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok()))
            else {
                eprintln!("usage: http-bench get URL N [--proxy HOST:PORT] [--conns C]");
                return 64;
            };
            let n: usize = n;
            let conns: usize = flag(&args, "--conns")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1)
                .max(1);
            let late = wait_for_start(&args);
            let start_ms = now_ms();
            let start = Instant::now();
            let per = n.div_ceil(conns);
            let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|sc| {
                let handles: Vec<_> = (0..conns)
                    .map(|_| {
                        let (url, proxy) = (url.clone(), proxy.clone());
                        sc.spawn(move || {
                            let mut lat = Vec::with_capacity(per);
                            let mut ok = 0;
                            for _ in 0..per {
                                let t = Instant::now();
                                match one_get(&url, proxy.as_deref()) {
                                    Ok(()) => ok += 1,
                                    Err(e) => eprintln!("http-bench: {e}"),
                                }
                                lat.push(t.elapsed().as_secs_f64() * 1e6);
                            }
                            (lat, ok)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            let secs = start.elapsed().as_secs_f64();
            let mut lat: Vec<f64> = results.iter().flat_map(|r| r.0.clone()).collect();
            let ok: usize = results.iter().map(|r| r.1).sum();
            lat.sort_by(|a, b| a.total_cmp(b));
            let q = |p: f64| {
                lat.get(((lat.len().max(1) - 1) as f64 * p) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            println!(
                "{{\"n\":{},\"ok\":{ok},\"secs\":{secs:.4},\"p50_us\":{:.0},\"p99_us\":{:.0},\"start_ms\":{start_ms},\"end_ms\":{},\"late\":{late}}}",
                lat.len(),
                q(0.5),
                q(0.99),
                now_ms()
            );
            if ok == lat.len() {
                0
            } else {
                1
            }
        }
        Some("connect") => {
            let (Some(target), Some(bytes)) =
                (args.get(1), args.get(2).and_then(|b| b.parse::<u64>().ok()))
            else {
                eprintln!("usage: http-bench connect HOST:PORT BYTES [--proxy HOST:PORT]");
                return 64;
            };
            let start = Instant::now();
            let addr = proxy.as_deref().unwrap_or(target);
            let mut s = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("http-bench: connect {addr}: {e}");
                    return 1;
                }
            };
            if proxy.is_some() {
                let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
                let _ = s.write_all(req.as_bytes());
                // The proxy's answer head, byte by byte up to the blank line.
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).unwrap_or(0) == 0 {
                        eprintln!(
                            "http-bench: the proxy closed: {}",
                            String::from_utf8_lossy(&head)
                        );
                        return 1;
                    }
                    head.push(b[0]);
                }
                if !head.starts_with(b"HTTP/1.1 200") {
                    eprintln!("http-bench: {}", String::from_utf8_lossy(&head));
                    return 1;
                }
            }
            let mut got: u64 = 0;
            let mut buf = vec![0u8; 256 * 1024];
            while got < bytes {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
            }
            println!(
                "{{\"bytes\":{got},\"secs\":{:.4}}}",
                start.elapsed().as_secs_f64()
            );
            if got >= bytes {
                0
            } else {
                1
            }
        }
        Some("post") => {
            let (Some(url), Some(n), Some(body)) = (
                args.get(1),
                args.get(2).and_then(|n| n.parse::<usize>().ok()),
                args.get(3),
            ) else {
                eprintln!("usage: http-bench post URL N BODY [--start-at UNIX_MS] [--method M]");
                return 64;
            };
            let Some(rest) = url.strip_prefix("http://") else {
                eprintln!("http-bench: only http:// URLs");
                return 64;
            };
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let late = wait_for_start(&args);
            let stream = match TcpStream::connect(authority) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("http-bench: connect {authority}: {e}");
                    return 1;
                }
            };
            let _ = stream.set_nodelay(true);
            let mut w = match stream.try_clone() {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("http-bench: {e}");
                    return 1;
                }
            };
            let mut r = std::io::BufReader::new(stream);
            let method = flag(&args, "--method").unwrap_or_else(|| "POST".into());
            let req = format!(
                "{method} /{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nAuthorization: Bearer agf-placeholder\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let start_ms = now_ms();
            let start = Instant::now();
            let (mut lat, mut first, mut ok) = (Vec::with_capacity(n), Vec::with_capacity(n), 0);
            for _ in 0..n {
                let t = Instant::now();
                if let Err(e) = w.write_all(req.as_bytes()) {
                    eprintln!("http-bench: {e}");
                    break;
                }
                match read_answer(&mut r, t) {
                    Ok((good, fb)) => {
                        ok += usize::from(good);
                        first.push(fb);
                    }
                    Err(e) => {
                        eprintln!("http-bench: {e}");
                        break;
                    }
                }
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let secs = start.elapsed().as_secs_f64();
            let q = |v: &mut Vec<f64>, p: f64| {
                v.sort_by(|a, b| a.total_cmp(b));
                v.get(((v.len().max(1) - 1) as f64 * p) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            println!(
                "{{\"n\":{},\"ok\":{ok},\"secs\":{secs:.4},\"p50_us\":{:.0},\"p99_us\":{:.0},\"fb50_us\":{:.0},\"fb99_us\":{:.0},\"start_ms\":{start_ms},\"end_ms\":{},\"late\":{late}}}",
                lat.len(),
                q(&mut lat, 0.5),
                q(&mut lat, 0.99),
                q(&mut first, 0.5),
                q(&mut first, 0.99),
                now_ms()
            );
            i32::from(ok != n)
        }
        _ => {
            eprintln!("usage: http-bench get|connect|post …");
            64
        }
    }
}

/// `agenfleet-agent health-http PORT PATH`: the engine's health probe for a `[health] http`
/// check — GET http://127.0.0.1:PORT/PATH; healthy (exit 0) on 2xx or 3xx.
pub fn health_main() -> i32 {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let (Some(port), Some(path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: health-http PORT PATH");
        return 64;
    };
    let probe = || -> Result<String, String> {
        let mut s =
            TcpStream::connect(("127.0.0.1", port.parse::<u16>().map_err(|e| e.to_string())?))
                .map_err(|e| format!("connect: {e}"))?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&head[..n]).to_string())
    };
    match probe() {
        Ok(h)
            if h.starts_with("HTTP/1.1 2")
                || h.starts_with("HTTP/1.1 3")
                || h.starts_with("HTTP/1.0 2") =>
        {
            0
        }
        Ok(h) => {
            eprintln!("unhealthy: {}", h.lines().next().unwrap_or(""));
            1
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            1
        }
    }
}
