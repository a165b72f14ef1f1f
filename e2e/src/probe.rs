//! The connectivity probe: a TCP/UDP echo server that answers every client with the
//! address it saw, and a client that prints that answer. Tests run it inside pod network
//! namespaces to prove traffic arrives without NAT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Serves TCP and UDP on `addr` until killed. Each TCP client gets one line
/// `peer=<ip>:<port>` then the server drains what it sends (for bulk-transfer checks) and
/// answers `bytes=<n>` when the client half-closes. Each UDP datagram is answered with
/// `peer=<ip>:<port>`.
pub fn serve(addr: SocketAddr) -> Result<()> {
    let tcp = TcpListener::bind(addr).with_context(|| format!("bind tcp {addr}"))?;
    let udp = UdpSocket::bind(addr).with_context(|| format!("bind udp {addr}"))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("peer={from}\n").as_bytes(), from);
        }
    });
    // Readiness for whoever started us: one line on stdout once both sockets listen.
    println!("listening {addr}");
    std::io::stdout().flush()?;
    for conn in tcp.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || -> std::io::Result<()> {
            let peer = conn.peer_addr()?;
            conn.write_all(format!("peer={peer}\n").as_bytes())?;
            let mut total = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            conn.write_all(format!("bytes={total}\n").as_bytes())
        });
    }
    Ok(())
}

/// Connects over TCP, prints the peer line the server saw, optionally sends `send_bytes`
/// bytes and checks that the server counted them all.
pub fn connect(addr: SocketAddr, send_bytes: u64, timeout: Duration) -> Result<String> {
    connect_with(addr, Payload::Bytes(send_bytes), timeout)
}

/// What a client sends after the greeting.
#[derive(Clone, Copy, Debug)]
pub enum Payload {
    /// This many bytes, as fast as the connection takes them.
    Bytes(u64),
    /// [`PACE_CHUNK`] bytes every [`PACE_INTERVAL`] until the duration has passed: a
    /// long-lived, slow stream that breaks if the path drops it meanwhile.
    Paced(Duration),
}

pub const PACE_CHUNK: usize = 4096;
pub const PACE_INTERVAL: Duration = Duration::from_millis(100);

/// [`connect`] with any [`Payload`]; the server must count exactly what was sent.
pub fn connect_with(addr: SocketAddr, payload: Payload, timeout: Duration) -> Result<String> {
    let mut conn =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    conn.set_read_timeout(Some(timeout.max(Duration::from_secs(30))))?;
    // A write that stalls this long means the path is broken.
    conn.set_write_timeout(Some(timeout.max(Duration::from_secs(30))))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let seen = line
        .trim()
        .strip_prefix("peer=")
        .context("server sent no peer line")?
        .to_string();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0u64;
    match payload {
        Payload::Bytes(total) => {
            while sent < total {
                let n = (total - sent).min(chunk.len() as u64) as usize;
                conn.write_all(&chunk[..n])
                    .with_context(|| format!("send after {sent} bytes"))?;
                sent += n as u64;
            }
        }
        Payload::Paced(duration) => {
            let start = std::time::Instant::now();
            let mut next = start;
            while start.elapsed() < duration {
                conn.write_all(&chunk[..PACE_CHUNK]).with_context(|| {
                    format!(
                        "send after {sent} bytes, {:.1} s",
                        start.elapsed().as_secs_f64()
                    )
                })?;
                sent += PACE_CHUNK as u64;
                next += PACE_INTERVAL;
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
        }
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .context("read the server's byte count")?;
    let counted: u64 = answer
        .trim()
        .strip_prefix("bytes=")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("bad byte count answer {answer:?}"))?;
    if counted != sent {
        bail!("server counted {counted} bytes, sent {sent}");
    }
    Ok(seen)
}

/// Resolves `name` with the C library's resolver (so /etc/resolv.conf, its search list
/// and ndots apply, as for any program in a pod) and returns the addresses found.
pub fn resolve(name: &str) -> Result<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs;
    let mut ips: Vec<std::net::IpAddr> = (name, 0)
        .to_socket_addrs()
        .with_context(|| format!("resolve {name}"))?
        .map(|a| a.ip())
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        bail!("{name} resolved to no address");
    }
    Ok(ips)
}

/// Sends one UDP datagram and returns the peer address the server saw.
pub fn udp(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(b"hello", addr)?;
    let mut buf = [0u8; 256];
    let (n, _) = sock
        .recv_from(&mut buf)
        .with_context(|| format!("no UDP answer from {addr}"))?;
    let text = String::from_utf8_lossy(&buf[..n]);
    Ok(text
        .trim()
        .strip_prefix("peer=")
        .context("bad UDP answer")?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> SocketAddr {
        let port = crate::harness::free_port("127.0.0.1".parse().unwrap()).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        std::thread::spawn(move || serve(addr));
        // The server binds right away; retry the first connection until it does.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "probe server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        addr
    }

    #[test]
    fn bulk_and_paced_payloads_are_counted_by_the_server() {
        let addr = server();
        let seen = connect_with(
            addr,
            Payload::Bytes(3 * 1024 * 1024 + 7),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(seen.starts_with("127.0.0.1:"), "{seen}");
        let t = std::time::Instant::now();
        connect_with(
            addr,
            Payload::Paced(Duration::from_millis(350)),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(350));
        assert!(udp(addr, Duration::from_secs(5))
            .unwrap()
            .starts_with("127.0.0.1:"));
    }

    #[test]
    fn resolves_with_the_system_resolver() {
        let ips = resolve("localhost").unwrap();
        assert!(ips.iter().any(|ip| ip.is_loopback()), "{ips:?}");
    }
}
