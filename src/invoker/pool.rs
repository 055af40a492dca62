//! Keep-alive HTTP/1.1 connections to one plain `http://` function, each driven by the call
//! that holds it.
//!
//! hyper's pooled client gives every connection a task of its own: a call hands its request
//! to that task through a channel, the task writes it and hands the answer back, two wake-ups
//! across tasks (and often across threads) per call. Here a call takes an idle connection out
//! of the pool and polls the connection itself while it waits for the answer and reads the
//! body, then puts it back. Nothing polls an idle connection; one the function closed
//! meanwhile is found closed when it is next taken, and dropped.

use super::transport::{chain, Answered, Limited};
use super::InvokeError;
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

type Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One connection: the handle requests are sent on, and the connection itself.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Driver,
    /// The connection has finished (closed by either side, or failed).
    done: bool,
    /// When it was last put back.
    idle_since: Instant,
}

impl Conn {
    /// Let the connection make progress: write what is queued, read what arrived.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.done {
            if let Poll::Ready(r) = Pin::new(&mut self.driver).poll(cx) {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "function connection closed with an error");
                }
                self.done = true;
            }
        }
    }

    /// Drive the connection once, without waiting for it.
    async fn drive_once(&mut self) {
        poll_fn(|cx| {
            self.drive(cx);
            Poll::Ready(())
        })
        .await;
    }

    fn usable(&self) -> bool {
        !self.done && !self.sender.is_closed()
    }
}

/// Why one exchange on a connection failed.
enum Failed {
    /// The request never left: it may be sent again, on another connection.
    Unsent(Box<http::Request<Full<Bytes>>>, InvokeError),
    /// Anything else.
    Other(InvokeError),
}

/// The idle connections to one function.
pub struct Pool {
    /// Where to connect (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// The `Host` header of every request.
    authority: http::HeaderValue,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool for `url` (`http://`), keeping up to `max_idle` idle connections for
    /// `idle_timeout`.
    pub fn new(
        url: &reqwest::Url,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Result<Self, switchyard_sdk::BoxError> {
        let host = url.host_str().ok_or("the function url has no host")?;
        let port = url
            .port_or_known_default()
            .ok_or("the function url has no port")?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            authority: http::HeaderValue::from_str(&authority)?,
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
            idle_timeout,
        })
    }

    /// Send `req` (its URI in origin form is what is written) and read the answer, at most
    /// `max` bytes of body. A request that could not be written on a kept connection (the
    /// function closed it while it was idle) is sent once more on a new one.
    pub async fn send(
        &self,
        req: http::Request<Bytes>,
        max: usize,
    ) -> Result<Answered, InvokeError> {
        let (mut parts, body) = req.into_parts();
        if parts.uri.scheme().is_some() {
            parts.uri = parts
                .uri
                .path_and_query()
                .map_or_else(|| http::Uri::from_static("/"), |pq| pq.clone().into());
        }
        parts
            .headers
            .entry(http::header::HOST)
            .or_insert_with(|| self.authority.clone());
        let mut req = http::Request::from_parts(parts, Full::new(body));
        loop {
            let (conn, kept) = match self.take().await {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            match self.exchange(conn, req, max).await {
                Ok(answer) => return Ok(answer),
                // Closed while idle, found only now: the next kept one, or a new one.
                Err(Failed::Unsent(r, _)) if kept => req = *r,
                Err(Failed::Unsent(_, e) | Failed::Other(e)) => return Err(e),
            }
        }
    }

    /// An idle connection that is still open, the most recently used first.
    async fn take(&self) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().expect("pool lock");
                idle.pop()?
            };
            if conn.idle_since.elapsed() >= self.idle_timeout {
                continue;
            }
            // One poll reads what came while it was idle: the end of the stream, if the
            // function closed it.
            conn.drive_once().await;
            if conn.usable() {
                return Some(conn);
            }
        }
    }

    fn put(&self, mut conn: Conn) {
        if !conn.usable() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.lock().expect("pool lock");
        // Put back in order of use, so the oldest are at the front.
        let stale = idle
            .iter()
            .take_while(|c| now.duration_since(c.idle_since) >= self.idle_timeout)
            .count();
        idle.drain(..stale);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, InvokeError> {
        let refused = |e: &dyn std::fmt::Display| {
            InvokeError::Connect(format!("connection refused or unreachable: {e}"))
        };
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| refused(&e))?;
        // Small requests must not wait for the previous one's ACK (Nagle + delayed ACK).
        stream.set_nodelay(true).map_err(|e| refused(&e))?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| refused(&e))?;
        Ok(Conn {
            sender,
            driver,
            done: false,
            idle_since: Instant::now(),
        })
    }

    /// One request and its answer on `conn`, which goes back to the pool if it stays open.
    async fn exchange(
        &self,
        mut conn: Conn,
        req: http::Request<Full<Bytes>>,
        max: usize,
    ) -> Result<Answered, Failed> {
        let mut answer = std::pin::pin!(conn.sender.try_send_request(req));
        let resp = poll_fn(|cx| {
            conn.drive(cx);
            match answer.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(Some)),
                Poll::Pending if conn.done => Poll::Ready(Err(None)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let resp = match resp {
            Ok(r) => r,
            Err(Some(mut e)) => {
                let err = InvokeError::Connect(hyper_error("connection error", e.error()));
                return Err(match e.take_message() {
                    Some(req) => Failed::Unsent(Box::new(req), err),
                    None => Failed::Other(err),
                });
            }
            Err(None) => {
                return Err(Failed::Other(InvokeError::Connect(
                    "connection error: the function closed the connection before answering".into(),
                )))
            }
        };
        let (parts, body) = resp.into_parts();
        let body = read(&mut conn, body, max).await.map_err(Failed::Other)?;
        // The end of the answer lets the connection take the next request.
        conn.drive_once().await;
        self.put(conn);
        Ok(Answered {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Read `body` to its end while driving `conn`, which delivers it.
async fn read(conn: &mut Conn, mut body: Incoming, max: usize) -> Result<Bytes, InvokeError> {
    let mut limited = Limited::new(max);
    loop {
        let frame = poll_fn(|cx| {
            conn.drive(cx);
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending if conn.done => Poll::Ready(Some(Err(None))),
                Poll::Pending => Poll::Pending,
                Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Some))),
            }
        })
        .await;
        match frame {
            None => return Ok(limited.finish()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    limited.push(data)?;
                }
            }
            Some(Err(e)) => {
                let why = match e {
                    Some(e) => hyper_error("connection error", &e),
                    None => "connection error: closed in the middle of the answer".into(),
                };
                return Err(InvokeError::Connect(format!("reading the reply: {why}")));
            }
        }
    }
}

/// `kind`, then hyper's error and its causes (hyper's own text names no URL).
fn hyper_error(kind: &str, e: &hyper::Error) -> String {
    chain(&format!("{kind}: {e}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that checks each request's line and `Host`, answers it with `answer` (raw
    /// bytes), counts connections, and closes a connection after `per_conn` answers.
    async fn server(answer: &'static [u8], per_conn: usize) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut have = Vec::new();
                    for _ in 0..per_conn {
                        // One request: headers, then a content-length body.
                        loop {
                            if let Some(end) = find(&have, b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&have[..end]).to_lowercase();
                                let len: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .map_or(0, |v| v.trim().parse().unwrap());
                                if have.len() >= end + 4 + len {
                                    assert!(head.starts_with("post / http/1.1"), "{head}");
                                    assert!(head.contains("\r\nhost: 127.0.0.1:"), "{head}");
                                    have.drain(..end + 4 + len);
                                    break;
                                }
                            }
                            let n = s.read(&mut buf).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            have.extend_from_slice(&buf[..n]);
                        }
                        s.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (port, conns)
    }

    fn find(h: &[u8], n: &[u8]) -> Option<usize> {
        h.windows(n.len()).position(|w| w == n)
    }

    fn req(port: u16) -> http::Request<Bytes> {
        let mut r = http::Request::new(Bytes::from_static(b"{\"a\":1}"));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = format!("http://127.0.0.1:{port}/").parse().unwrap();
        r
    }

    #[tokio::test]
    async fn connections_are_kept_and_reused() {
        let (port, conns) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 1000).await;
        let url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let pool = Pool::new(&url, 4, Duration::from_secs(60)).unwrap();
        for _ in 0..20 {
            let answer = pool.send(req(port), 100).await.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(&answer.body[..], b"ok");
        }
        assert_eq!(
            conns.load(Ordering::SeqCst),
            1,
            "one connection for calls in turn"
        );
        let both = futures::future::join_all((0..8).map(|_| pool.send(req(port), 100))).await;
        assert!(both.iter().all(Result::is_ok));
        assert!(
            pool.idle.lock().unwrap().len() <= 4,
            "at most max_idle kept"
        );
    }

    #[tokio::test]
    async fn a_connection_the_function_closed_is_replaced_and_chunked_bodies_are_read() {
        // One answer per connection, chunked, then the server closes it (no `Connection:
        // close` said): the next call finds it closed, or fails to write, and uses a new one.
        let (port, conns) = server(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            1,
        )
        .await;
        let url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let pool = Pool::new(&url, 4, Duration::from_secs(60)).unwrap();
        for i in 0..5 {
            let answer = pool.send(req(port), 100).await.unwrap();
            assert_eq!(&answer.body[..], b"abcde", "call {i}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn connection_close_is_honoured_and_limits_and_refusals_are_errors() {
        let (port, conns) = server(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
            1,
        )
        .await;
        let url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let pool = Pool::new(&url, 4, Duration::from_secs(60)).unwrap();
        let answer = pool.send(req(port), 100).await.unwrap();
        assert_eq!(&answer.body[..], b"hello");
        assert!(
            pool.idle.lock().unwrap().is_empty(),
            "a closed connection is not kept"
        );
        let err = pool.send(req(port), 4).await.unwrap_err();
        assert!(matches!(err, InvokeError::Refused(_)), "{err}");
        assert_eq!(conns.load(Ordering::SeqCst), 2);

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://127.0.0.1:{dead}/").parse().unwrap();
        let pool = Pool::new(&url, 4, Duration::from_secs(60)).unwrap();
        let err = pool.send(req(dead), 100).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("connection refused or unreachable"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (port, conns) = server(b"HTTP/1.1 204 No Content\r\n\r\n", 1000).await;
        let url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let pool = Pool::new(&url, 4, Duration::from_millis(50)).unwrap();
        pool.send(req(port), 100).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let answer = pool.send(req(port), 100).await.unwrap();
        assert_eq!(answer.status, 204);
        assert!(answer.body.is_empty());
        assert_eq!(
            conns.load(Ordering::SeqCst),
            2,
            "the expired connection was not reused"
        );
    }
}
