//! The metrics endpoint: a minimal HTTP/1.x server on its own thread answering
//! `GET /metrics` (requests parsed with `httparse`), one connection at a time.
//!
//! Invariants: never runs on a reactor thread; a slow or silent client holds it at most
//! [`IO_TIMEOUT`]; every connection gets one response and is closed; the thread ends when
//! [`MetricsServer::stop`] shuts its listener down.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::observe::scrape::Hub;

/// How long one client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read.
const MAX_REQUEST: usize = 8192;

/// The `Content-Type` of the answer (the Prometheus text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The running endpoint.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    /// A clone of the listening socket, to wake the thread's `accept` on stop.
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `hub` on `listener` from a new thread named `ringrpc-metrics`.
    pub(crate) fn start(listener: TcpListener, hub: Arc<Hub>) -> io::Result<MetricsServer> {
        let addr = listener.local_addr()?;
        let waker = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringrpc-metrics".into())
            .spawn(move || serve(listener, &hub, &flag))?;
        Ok(MetricsServer {
            addr,
            listener: waker,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the thread.
    pub(crate) fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Linux wakes a blocked `accept` on a listening socket that is shut down.
        let _ = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn serve(listener: TcpListener, hub: &Hub, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, hub) {
                    tracing::debug!("metrics request failed: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("metrics endpoint cannot accept: {e}");
                // Descriptor exhaustion and the like: do not spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request from `stream` and writes its response.
fn answer(mut stream: TcpStream, hub: &Hub) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let (method, path) = loop {
        if len == buf.len() {
            return respond(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                &[],
            );
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(()); // closed before a whole request
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or_default().to_owned(),
                    req.path.unwrap_or_default().to_owned(),
                );
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => {
                return respond(
                    &mut stream,
                    400,
                    "Bad Request",
                    "text/plain",
                    b"bad request\n",
                    &[],
                );
            }
        }
    };
    let path = path.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return respond(
            &mut stream,
            404,
            "Not Found",
            "text/plain",
            b"not found; metrics are at /metrics\n",
            &[],
        );
    }
    match method.as_str() {
        "GET" => {
            let body = exposition(hub);
            respond(&mut stream, 200, "OK", CONTENT_TYPE, body.as_bytes(), &[])
        }
        "HEAD" => {
            let body = exposition(hub);
            respond_head(&mut stream, body.len())
        }
        _ => respond(
            &mut stream,
            405,
            "Method Not Allowed",
            "text/plain",
            b"method not allowed; use GET\n",
            &[("Allow", "GET, HEAD")],
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn respond_head(stream: &mut TcpStream, len: usize) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())
}

/// The whole exposition of one scrape, in the Prometheus text format 0.0.4.
fn exposition(hub: &Hub) -> String {
    let scrape = hub.scrape();
    crate::observe::prometheus::render(
        &scrape.cores,
        scrape.stale,
        scrape.methods,
        scrape.pubsub,
        scrape.bridge,
    )
}
