//! The benchmark's function: a small hyper HTTP/1 server that answers every POST with its body
//! and content type, so the function is never the bottleneck. Its own process, so its CPU time
//! is measured apart from the gateway's.
//!
//! `bench-echo <port>`; `GET /count` answers how many POSTs it has served.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

async fn answer(
    req: Request<Incoming>,
    served: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == hyper::Method::GET {
        let n = served.load(Ordering::Relaxed).to_string();
        return Ok(Response::new(Full::new(Bytes::from(n))));
    }
    let content_type = req.headers().get("content-type").cloned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
            return Ok(r);
        }
    };
    served.fetch_add(1, Ordering::Relaxed);
    let mut r = Response::new(Full::new(body));
    if let Some(ct) = content_type {
        r.headers_mut().insert("content-type", ct);
    }
    Ok(r)
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: bench-echo <port>");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let served = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, served.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
