//! Shared Key authorization for the official Azure Storage crates.
//!
//! The 1.x `azure_storage_queue`/`azure_storage_blob` crates take an Entra ID credential or a
//! SAS URL, but not an account key (connection strings are the common case for Azure Functions
//! users and the only one the emulator supports). This pipeline policy signs each try of each
//! request as the Storage service documents ("Authorize with Shared Key", version 2009-09-19
//! and later): a `x-ms-date`, then `Authorization: SharedKey <account>:<HMAC-SHA256>`.

use crate::connection::decode_key;
use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use switchyard_sdk::config::Secret;

/// Signs requests with the account key.
pub struct SharedKeyPolicy {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedKeyPolicy({})", self.account)
    }
}

impl SharedKeyPolicy {
    /// A policy for `account`; `key` is the base64 account key (checked when the connection
    /// string was parsed).
    pub fn new(account: &str, key: &Secret) -> Arc<Self> {
        Arc::new(Self {
            account: account.to_string(),
            key: decode_key(key).unwrap_or_default(),
        })
    }

    /// The string to sign for a request.
    pub fn string_to_sign(&self, req: &Request) -> String {
        let h = |name: &str| -> &str {
            req.headers()
                .iter()
                .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let length = match req.body().len() {
            Some(0) | None => String::new(),
            Some(n) => n.to_string(),
        };
        let mut s = String::with_capacity(256);
        s.push_str(req.method().as_ref());
        s.push('\n');
        for part in [
            h("content-encoding"),
            h("content-language"),
            &length,
            h("content-md5"),
            h("content-type"),
            "", // Date: x-ms-date is used instead.
            h("if-modified-since"),
            h("if-match"),
            h("if-none-match"),
            h("if-unmodified-since"),
            h("range"),
        ] {
            s.push_str(part);
            s.push('\n');
        }
        let mut ms: Vec<(String, &str)> = req
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.as_str().trim()))
            .collect();
        ms.sort();
        for (k, v) in ms {
            s.push_str(&k);
            s.push(':');
            s.push_str(v);
            s.push('\n');
        }
        s.push_str(&canonicalized_resource(&self.account, req.url()));
        s
    }

    fn sign(&self, string_to_sign: &str) -> String {
        use base64::Engine;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(string_to_sign.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// `/<account><path>` then each query parameter, lower-cased and sorted, one per line.
fn canonicalized_resource(account: &str, url: &url::Url) -> String {
    let mut s = format!("/{account}{}", url.path());
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in url.query_pairs() {
        params
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut vs) in params {
        vs.sort();
        s.push('\n');
        s.push_str(&k);
        s.push(':');
        s.push_str(&vs.join(","));
    }
    s
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        request.insert_header("x-ms-date", date);
        let signature = self.sign(&self.string_to_sign(request));
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::Method;

    #[test]
    fn string_to_sign_follows_the_documented_layout() {
        let p = SharedKeyPolicy::new("myaccount", &Secret::new("a2V5"));
        let url = url::Url::parse(
            "http://127.0.0.1:10001/myaccount/myqueue/messages?visibilitytimeout=30&numofmessages=16",
        )
        .unwrap();
        let mut req = Request::new(url, Method::Get);
        req.insert_header("x-ms-version", "2026-04-06");
        req.insert_header("x-ms-date", "Fri, 27 Nov 2026 12:00:00 GMT");
        req.insert_header("accept", "application/xml");
        assert_eq!(
            p.string_to_sign(&req),
            "GET\n\n\n\n\n\n\n\n\n\n\n\n\
             x-ms-date:Fri, 27 Nov 2026 12:00:00 GMT\nx-ms-version:2026-04-06\n\
             /myaccount/myaccount/myqueue/messages\nnumofmessages:16\nvisibilitytimeout:30"
        );
        // HMAC-SHA256 with the key "key" over "abc", base64 (computed independently).
        assert_eq!(
            p.sign("abc"),
            "nBluMtwBdfhvSxy4konWYZ3mvuaZ5MN45oMJ7Zehpqs="
        );
    }
}
