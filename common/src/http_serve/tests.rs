use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::*;

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

fn limits(max_connections: usize, header_read_timeout: Duration) -> Limits {
    Limits {
        max_connections,
        header_read_timeout,
        ..Limits::default()
    }
}

/// Starts a server with `/healthz`, and `/slow` which says so on `entered` and answers
/// once `gate` gives a permit.
async fn start(
    limits: Limits,
    entered: Arc<Semaphore>,
    gate: Arc<Semaphore>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/slow",
            get(move || async move {
                entered.add_permits(1);
                let _ = gate.acquire().await;
                "slow\n"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        serve(listener, router, limits).await;
    });
    (addr, task)
}

/// A server whose `/slow` is never used.
async fn start_plain(limits: Limits) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    start(
        limits,
        Arc::new(Semaphore::new(0)),
        Arc::new(Semaphore::new(0)),
    )
    .await
}

async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Everything until the server closes, failing after `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .expect("server closed the connection in time")
        .ok(); // A reset is a close as well.
    String::from_utf8_lossy(&out).into_owned()
}

async fn healthz(addr: SocketAddr) -> String {
    let mut s = send(addr, GET_HEALTHZ).await;
    read_until_closed(&mut s, Duration::from_secs(2)).await
}

#[tokio::test]
async fn a_half_open_request_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(300);
    let (addr, _server) = start_plain(limits(8, timeout)).await;
    let started = Instant::now();
    let mut s = send(addr, b"GET /healthz HTTP/1.1\r\nHost: t").await;
    let answer = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= timeout, "closed before the timeout");
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(300);
    let (addr, _server) = start_plain(limits(8, timeout)).await;
    let mut s = send(addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let started = Instant::now();
    let answer = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() >= timeout, "closed before the timeout");
}

#[tokio::test]
async fn at_the_cap_a_new_connection_replaces_the_oldest_idle_one() {
    let (addr, _server) = start_plain(limits(4, Duration::from_secs(30))).await;
    let mut oldest = send(addr, b"GET /healthz HTT").await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(send(addr, b"GET /healthz HTT").await);
    }
    // The table is full of half-open connections; a probe is still answered...
    let answer = healthz(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...in place of the oldest, closed long before its 30 s header timeout.
    let gone = read_until_closed(&mut oldest, Duration::from_secs(2)).await;
    assert!(gone.is_empty(), "{gone}");
    // Many more still leave room for probes.
    for _ in 0..50 {
        others.push(send(addr, b"GET /hea").await);
    }
    let answer = healthz(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_connection_answering_a_request_is_not_evicted() {
    let (entered, gate) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let (addr, _server) = start(
        limits(1, Duration::from_secs(30)),
        entered.clone(),
        gate.clone(),
    )
    .await;
    let mut slow = send(
        addr,
        b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), entered.acquire())
        .await
        .expect("the slow request reached its handler");
    // The only slot is answering a request: a new connection is closed at once.
    let mut refused = send(addr, GET_HEALTHZ).await;
    let answer = read_until_closed(&mut refused, Duration::from_secs(2)).await;
    assert!(answer.is_empty(), "{answer}");
    gate.add_permits(1);
    let answer = read_until_closed(&mut slow, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let (addr, _server) = start_plain(Limits::default()).await;
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 16 * 1024));
    req.extend(b"\r\n\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(&req).await; // The server may stop reading half way.
    let answer = read_until_closed(&mut s, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn stopping_the_server_closes_open_connections() {
    let (addr, server) = start_plain(limits(8, Duration::from_secs(30))).await;
    let mut s = send(addr, b"GET /hea").await;
    // The connection is in the table once the server has answered a later one.
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
    server.abort();
    let gone = read_until_closed(&mut s, Duration::from_secs(2)).await;
    assert!(gone.is_empty(), "{gone}");
}

#[test]
fn a_complete_request_head_is_recognised() {
    assert!(has_complete_head(
        b"GET /healthz HTTP/1.1\r\nHost: n\r\n\r\n"
    ));
    assert!(has_complete_head(b"GET /healthz HTTP/1.1\nHost: n\n\n"));
    assert!(!has_complete_head(b"GET /healthz HTTP/1.1\r\nHost: n\r\n"));
    assert!(!has_complete_head(b"GET /healthz HTTP/1.1\r\nHost: ag"));
    assert!(!has_complete_head(b""));
}

#[tokio::test]
async fn a_connection_whose_request_has_arrived_is_not_evicted_before_it_is_read() {
    let (addr, _server) = start_plain(limits(2, Duration::from_secs(30))).await;
    // Blocking connects on this (only) runtime thread: the server accepts nothing until
    // the next await, then all three at once, before any connection task has run.
    let blocking = |bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut s, bytes).unwrap();
        s
    };
    let complete = blocking(GET_HEALTHZ);
    let _half_open = blocking(b"GET /hea");
    let _third = blocking(b"GET /hea");
    // The third takes the half-open one's place, not the complete request's.
    complete.set_nonblocking(true).unwrap();
    let mut complete = TcpStream::from_std(complete).unwrap();
    let answer = read_until_closed(&mut complete, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    use nix::sys::resource::{getrlimit, Resource};
    let soft = raise_nofile_limit().unwrap();
    assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (soft, soft));
}
