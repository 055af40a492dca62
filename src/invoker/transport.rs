//! How one call reaches the function.
//!
//! A plain `http://` function (the sidecar next door, the process switchyard starts) is
//! called on hyper's HTTP/1.1 connections kept in switchyard's own pool (`super::pool`), each
//! driven by the call that holds it: no connection tasks, no redirect, retry or proxy layers,
//! which reqwest puts around every request and which cost a URL parse and a copy of the
//! request per call. An `https://` function goes through reqwest, for TLS with the platform's
//! roots and the `HTTPS_PROXY` settings a remote endpoint may need. Both keep connections open
//! (`pool`), send `TCP_NODELAY`, and read at most `max_reply` bytes of the answer.

use super::InvokeError;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;
use switchyard_sdk::BoxError;

/// How long an idle connection to the function is kept.
const IDLE: Duration = Duration::from_secs(60);

/// The connection pool to one function (held once, in the function's shared call config).
pub enum Transport {
    /// `http://`: kept HTTP/1.1 connections, nothing in between.
    Plain(super::pool::Pool),
    /// `https://`: reqwest (TLS, proxies).
    Tls(reqwest::Client),
}

/// The function's answer, its body read.
#[derive(Debug)]
pub struct Answered {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, at most `max_reply` bytes.
    pub body: Bytes,
}

impl Transport {
    /// A pool for calls to `url`, keeping up to `pool` idle connections.
    pub fn new(url: &reqwest::Url, pool: usize) -> Result<Self, BoxError> {
        if url.scheme() == "http" {
            return Ok(Self::Plain(super::pool::Pool::new(url, pool, IDLE)?));
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(IDLE)
            .tcp_nodelay(true)
            // A redirect is an answer like any other non-2xx status, and retries are the
            // pipeline's policy, not the client's (without them reqwest also stops copying
            // every request in case it has to send it again).
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .build()?;
        Ok(Self::Tls(client))
    }

    /// Send `req` and read the answer's body, refusing one larger than `max` bytes.
    pub async fn send(
        &self,
        req: http::Request<Bytes>,
        max: usize,
    ) -> Result<Answered, InvokeError> {
        match self {
            Self::Plain(pool) => pool.send(req, max).await,
            Self::Tls(client) => {
                let req = reqwest::Request::try_from(req)
                    .map_err(|e| InvokeError::Refused(format!("cannot build the request: {e}")))?;
                let resp = client.execute(req).await.map_err(|e| {
                    let kind = if e.is_connect() {
                        "connection refused or unreachable"
                    } else if e.is_timeout() {
                        "timed out"
                    } else {
                        "connection error"
                    };
                    InvokeError::Connect(chain(kind, &e))
                })?;
                read(http::Response::<reqwest::Body>::from(resp), max).await
            }
        }
    }
}

/// `kind` and then the whole chain of `e`'s causes, without `e`'s own text (reqwest's names
/// the URL, which may carry credentials).
pub(super) fn chain(kind: &str, e: &dyn std::error::Error) -> String {
    let mut s = kind.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn read<B>(resp: http::Response<B>, max: usize) -> Result<Answered, InvokeError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
    let (parts, mut body) = resp.into_parts();
    let mut limited = Limited::new(max);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            InvokeError::Connect(format!(
                "reading the reply: {}",
                chain("connection error", &e)
            ))
        })?;
        if let Ok(data) = frame.into_data() {
            limited.push(data)?;
        }
    }
    Ok(Answered {
        status: parts.status,
        headers: parts.headers,
        body: limited.finish(),
    })
}

/// A reply body gathered chunk by chunk up to `max` bytes. A body that arrives in one chunk
/// (the usual small reply) is kept as it came; only one in several chunks is copied.
pub(super) struct Limited {
    max: usize,
    len: usize,
    first: Option<Bytes>,
    rest: BytesMut,
}

impl Limited {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            len: 0,
            first: None,
            rest: BytesMut::new(),
        }
    }

    pub(super) fn push(&mut self, chunk: Bytes) -> Result<(), InvokeError> {
        self.len += chunk.len();
        if self.len > self.max {
            return Err(InvokeError::Refused(format!(
                "reply larger than max_reply ({} bytes)",
                self.max
            )));
        }
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
            return Ok(());
        }
        if let Some(first) = self.first.take() {
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&chunk);
        Ok(())
    }

    pub(super) fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_in_one_chunk_is_kept_and_several_are_joined_up_to_the_limit() {
        let one = Bytes::from_static(b"hello");
        let mut b = Limited::new(5);
        b.push(one.clone()).unwrap();
        let kept = b.finish();
        assert_eq!(kept, one);
        assert_eq!(kept.as_ptr(), one.as_ptr(), "one chunk is not copied");

        let mut b = Limited::new(10);
        for c in [&b"ab"[..], b"", b"cde", b"f"] {
            b.push(Bytes::copy_from_slice(c)).unwrap();
        }
        assert_eq!(&b.finish()[..], b"abcdef");

        let mut b = Limited::new(4);
        b.push(Bytes::from_static(b"abc")).unwrap();
        let err = b.push(Bytes::from_static(b"de")).unwrap_err();
        assert!(matches!(err, InvokeError::Refused(_)), "{err}");
        assert_eq!(Limited::new(4).finish(), Bytes::new());
    }

    #[test]
    fn plain_http_goes_direct_and_https_through_reqwest() {
        let plain = Transport::new(&"http://127.0.0.1:7071".parse().unwrap(), 4).unwrap();
        assert!(matches!(plain, Transport::Plain(_)));
        let tls = Transport::new(&"https://example.org/api".parse().unwrap(), 4).unwrap();
        assert!(matches!(tls, Transport::Tls(_)));
    }
}
