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
    let mut conn =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    conn.set_read_timeout(Some(timeout.max(Duration::from_secs(30))))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let seen = line
        .trim()
        .strip_prefix("peer=")
        .context("server sent no peer line")?
        .to_string();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = send_bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        conn.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    let counted: u64 = answer
        .trim()
        .strip_prefix("bytes=")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("bad byte count answer {answer:?}"))?;
    if counted != send_bytes {
        bail!("server counted {counted} bytes, sent {send_bytes}");
    }
    Ok(seen)
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
