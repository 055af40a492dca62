//! Pieces every benchmark uses: the in-process echo function, free ports, peak memory.
#![allow(dead_code)]

use std::net::SocketAddr;

/// The fastest function there is: echo the body back with its content type.
pub async fn rust_echo() -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/",
        post(
            |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_string();
                ([("content-type", ct)], body)
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `/proc/<pid>/status` value in MiB (`VmHWM:` peak, `VmRSS:` now).
pub fn mem_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}
