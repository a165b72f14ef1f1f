//! The HTTP/1 server loop behind the agent's and the controller's `/healthz`, `/readyz`
//! and `/metrics`. Those ports listen on the node's addresses, so every pod can reach
//! them; the loop is built so that kubelet's probes keep being answered while someone
//! holds thousands of connections open (slowloris), and so that memory stays bounded.
//!
//! * A connection must send a complete request head within
//!   [`Limits::header_read_timeout`]. hyper starts that clock whenever it waits for a
//!   request head, so it is also the idle keep-alive timeout.
//! * At most [`Limits::max_connections`] connections are open. At the cap a new
//!   connection takes the place of the oldest one that is waiting for a request
//!   (half-open, or idle between requests); one whose request is being answered, or has
//!   fully arrived, is never closed, and when every one is, the new connection is closed
//!   at once. Replacing the oldest rather than refusing the newest is what keeps probes
//!   answered: a prober sends its request as soon as it connects, so it is answered
//!   within microseconds of being accepted, while connections that never finish a request
//!   age out of the table however fast they come. Accepting never waits on the cap, so
//!   the kernel's accept queue keeps draining.
//! * "Has fully arrived" is checked when a connection is accepted, by peeking at the
//!   socket: under a flood the accept loop runs ahead of the connection tasks, and a
//!   probe whose complete request sits unread in its socket would otherwise look as idle
//!   as the attacker's half-open connections and could be evicted before it is read.
//! * A request head larger than [`Limits::max_buf_size`] gets 431; bodies are never read
//!   (the routes are GET only), so a connection costs about one buffer of that size.

mod slots;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use slots::{Admit, Slots};

/// Bounds of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; each costs a file descriptor and about `max_buf_size`.
    pub max_connections: usize,
    /// Time to send a complete request head, and the longest idle keep-alive.
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes (hyper's minimum is 8192).
    pub max_buf_size: usize,
}

impl Default for Limits {
    /// 256 connections, 5 s, 8 KiB: kubelet and Prometheus send a request of a few
    /// hundred bytes right after connecting and use one or two connections each.
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(5),
            max_buf_size: 8192,
        }
    }
}

/// One open connection, as the table sees it.
#[derive(Debug)]
struct Conn {
    /// A request is waiting or being answered: the connection is not to be evicted.
    busy: AtomicBool,
    /// Notified to close the connection (evicted, or the server is stopping).
    close: Notify,
}

impl Conn {
    fn new(request_waiting: bool) -> Self {
        Conn {
            busy: AtomicBool::new(request_waiting),
            close: Notify::new(),
        }
    }
}

/// Whether a complete request head has already arrived on a just-accepted connection,
/// read without consuming it or waiting. Only the first KiB is looked at: probes and
/// scrapes send a few hundred bytes.
fn request_waiting(stream: &TcpStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 1024];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match recv(stream.as_raw_fd(), &mut buf, flags) {
        Ok(n) => has_complete_head(&buf[..n]),
        Err(_) => false,
    }
}

/// Whether `bytes` hold a request head up to its blank line (CRLF, or the bare LF that
/// HTTP/1 parsers accept too).
fn has_complete_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

type Table = Arc<Mutex<Slots<Arc<Conn>>>>;

fn lock(table: &Table) -> MutexGuard<'_, Slots<Arc<Conn>>> {
    // The table stays consistent whatever panicked while holding it.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves `router` on `listener` until the returned future is dropped; then every open
/// connection is closed too.
pub async fn serve(listener: TcpListener, router: axum::Router, limits: Limits) -> Infallible {
    // When the accept queue is full the kernel drops the handshake and the client retries
    // after a second, longer than a probe waits: make the queue as long as the system
    // allows (Linux takes a second listen() as a new backlog), so that bursts queue.
    if let Err(e) = nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN) {
        tracing::debug!(error = %e, "cannot lengthen the accept queue");
    }
    let table: Table = Arc::new(Mutex::new(Slots::new(limits.max_connections)));
    let _close_all = CloseAllOnDrop(table.clone());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buf_size);
    let mut pressure = Pressure::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(&e, &mut pressure).await;
                continue;
            }
        };
        let conn = Arc::new(Conn::new(request_waiting(&stream)));
        let admitted = lock(&table).admit(conn.clone(), |c| c.busy.load(Ordering::Acquire));
        let id = match admitted {
            Admit::Open(id) => id,
            Admit::Evicting(id, oldest) => {
                oldest.close.notify_one();
                pressure.note(false, limits.max_connections);
                id
            }
            Admit::Full => {
                pressure.note(true, limits.max_connections);
                continue; // `stream` is dropped: closed.
            }
        };
        let slot = SlotGuard {
            table: table.clone(),
            id,
        };
        tokio::spawn(serve_connection(
            http.clone(),
            stream,
            peer,
            conn,
            slot,
            router.clone(),
        ));
    }
}

async fn serve_connection(
    http: http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    _slot: SlotGuard,
    router: axum::Router,
) {
    let router = TowerToHyperService::new(router);
    let marker = conn.clone();
    let service = hyper::service::service_fn(move |req| {
        let busy = BusyGuard::new(marker.clone());
        let answer = hyper::service::Service::call(&router, req);
        async move {
            let res = answer.await;
            drop(busy);
            res
        }
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        res = connection => {
            if let Err(e) = res {
                // Timeouts, resets and malformed requests: the client's business.
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        _ = conn.close.notified() => {
            tracing::trace!(%peer, "HTTP connection closed to make room");
        }
    }
}

/// Marks a connection busy while its request is answered.
struct BusyGuard(Arc<Conn>);

impl BusyGuard {
    fn new(conn: Arc<Conn>) -> Self {
        conn.busy.store(true, Ordering::Release);
        BusyGuard(conn)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Frees a connection's slot however its task ends.
struct SlotGuard {
    table: Table,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        lock(&self.table).remove(self.id);
    }
}

/// Closes every open connection when the accept loop is dropped (the server stops).
struct CloseAllOnDrop(Table);

impl Drop for CloseAllOnDrop {
    fn drop(&mut self) {
        let open = lock(&self.0).drain();
        for conn in open {
            conn.close.notify_one();
        }
    }
}

/// An accept error. A connection that died in the accept queue is just skipped; anything
/// else (out of file descriptors or memory) would fail again at once, so wait a little
/// instead of spinning.
async fn accept_failed(e: &io::Error, pressure: &mut Pressure) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    if pressure.may_log() {
        tracing::warn!(error = %e, "cannot accept HTTP connections; retrying");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Counts connections closed at the cap and logs them at most every [`Self::PERIOD`]:
/// one line per flood, not one per connection.
#[derive(Debug, Default)]
struct Pressure {
    evicted: u64,
    refused: u64,
    last_log: Option<Instant>,
}

impl Pressure {
    const PERIOD: Duration = Duration::from_secs(10);

    fn may_log(&mut self) -> bool {
        let due = self.last_log.is_none_or(|t| t.elapsed() >= Self::PERIOD);
        if due {
            self.last_log = Some(Instant::now());
        }
        due
    }

    fn note(&mut self, refused: bool, max_connections: usize) {
        if refused {
            self.refused += 1;
        } else {
            self.evicted += 1;
        }
        if self.may_log() {
            tracing::warn!(
                max_connections,
                idle_closed = self.evicted,
                new_refused = self.refused,
                "HTTP connection limit reached: closing the oldest idle connections"
            );
            self.evicted = 0;
            self.refused = 0;
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit and returns the new
/// soft limit. The HTTP server needs at most `max_connections` descriptors, but the rest
/// of the process (watches, netlink sockets) should not run short because of it.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft >= hard {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    Ok(hard)
}

#[cfg(test)]
mod tests;
