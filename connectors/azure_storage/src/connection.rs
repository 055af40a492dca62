//! Storage connection strings: `AccountName=..;AccountKey=..`, SAS, and
//! `UseDevelopmentStorage=true` (the local emulator), mapped to service endpoints and a
//! credential.
//!
//! Errors name the offending key and never echo a value: a connection string carries the
//! account key.

use switchyard_sdk::config::Secret;
use url::Url;

/// The emulator's well-known development account (`UseDevelopmentStorage=true`). Both values
/// are published in the emulator's documentation; they are not secrets.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How requests are authorized.
#[derive(Clone)]
pub enum Credential {
    /// Shared key: every request is signed with the account key.
    SharedKey {
        /// The account name.
        account: String,
        /// The decoded account key.
        key: Secret,
    },
    /// A shared access signature appended to every URL (the query string, without `?`).
    Sas(Secret),
    /// No credential (public containers).
    Anonymous,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SharedKey { account, .. } => write!(f, "SharedKey({account})"),
            Self::Sas(_) => f.write_str("Sas(***)"),
            Self::Anonymous => f.write_str("Anonymous"),
        }
    }
}

/// A storage account as a connection string describes it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account name (used in canonicalized resources and logs).
    pub name: String,
    /// The blob service endpoint, e.g. `https://acct.blob.core.windows.net/`.
    pub blob_endpoint: Url,
    /// The queue service endpoint.
    pub queue_endpoint: Url,
    /// How requests are authorized.
    pub credential: Credential,
}

/// A connection string could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// A `key=value` pair is malformed (the value is not shown).
    #[error("connection string: part {0} is not key=value")]
    NotKeyValue(usize),
    /// A key is unknown.
    #[error("connection string: unknown key {0:?}")]
    UnknownKey(String),
    /// A part's key is not a word (perhaps a pasted key); neither is shown.
    #[error("connection string: part {0} has no known key")]
    UnknownPart(usize),
    /// A required key is missing.
    #[error("connection string: {0}")]
    Missing(&'static str),
    /// A value is invalid; the value itself is not shown.
    #[error("connection string: {key} is invalid ({why})")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why, without the value.
        why: &'static str,
    },
}

impl Account {
    /// Parse a connection string. `endpoint`, when given, replaces the endpoint of the service
    /// the connector uses (`service` is `blob` or `queue`).
    pub fn parse(conn: &str) -> Result<Self, ConnectionStringError> {
        let mut protocol = None;
        let mut name = None;
        let mut key = None;
        let mut sas = None;
        let mut suffix = None;
        let mut blob = None;
        let mut queue = None;
        let mut dev = false;
        let mut dev_proxy = None;
        for (i, part) in conn.split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part
                .split_once('=')
                .ok_or(ConnectionStringError::NotKeyValue(i + 1))?;
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "defaultendpointsprotocol" => protocol = Some(v.to_string()),
                "accountname" => name = Some(v.to_string()),
                "accountkey" => key = Some(v.to_string()),
                "sharedaccesssignature" => sas = Some(v.trim_start_matches('?').to_string()),
                "endpointsuffix" => suffix = Some(v.to_string()),
                "blobendpoint" => blob = Some(v.to_string()),
                "queueendpoint" => queue = Some(v.to_string()),
                "tableendpoint" | "fileendpoint" | "accountendpoint" => {}
                "usedevelopmentstorage" => dev = v.eq_ignore_ascii_case("true"),
                "developmentstorageproxyuri" => dev_proxy = Some(v.to_string()),
                // Echo only what looks like a key name: a pasted secret must not show up.
                other if other.len() <= 32 && other.chars().all(|c| c.is_ascii_alphabetic()) => {
                    return Err(ConnectionStringError::UnknownKey(other.to_string()))
                }
                _ => return Err(ConnectionStringError::UnknownPart(i + 1)),
            }
        }
        if dev {
            let base = dev_proxy.unwrap_or_else(|| "http://127.0.0.1".to_string());
            let host = Url::parse(&base).map_err(|_| ConnectionStringError::Invalid {
                key: "DevelopmentStorageProxyUri",
                why: "not a URL",
            })?;
            let host = host.host_str().unwrap_or("127.0.0.1").to_string();
            return Ok(Self {
                name: DEV_ACCOUNT.into(),
                blob_endpoint: dev_url(&host, 10000),
                queue_endpoint: dev_url(&host, 10001),
                credential: Credential::SharedKey {
                    account: DEV_ACCOUNT.into(),
                    key: Secret::new(DEV_KEY),
                },
            });
        }
        let protocol = protocol.unwrap_or_else(|| "https".into());
        if protocol != "https" && protocol != "http" {
            return Err(ConnectionStringError::Invalid {
                key: "DefaultEndpointsProtocol",
                why: "must be http or https",
            });
        }
        let suffix = suffix.unwrap_or_else(|| "core.windows.net".into());
        let endpoint = |explicit: Option<String>, service: &str, key: &'static str| {
            let s = match (explicit, &name) {
                (Some(e), _) => e,
                (None, Some(n)) => format!("{protocol}://{n}.{service}.{suffix}/"),
                (None, None) => {
                    return Err(ConnectionStringError::Missing(
                        "give AccountName or BlobEndpoint/QueueEndpoint",
                    ))
                }
            };
            parse_endpoint(&s, key)
        };
        let blob_endpoint = endpoint(blob, "blob", "BlobEndpoint")?;
        let queue_endpoint = endpoint(queue, "queue", "QueueEndpoint")?;
        let credential = match (key, sas) {
            (Some(k), _) => {
                let account = name.clone().ok_or(ConnectionStringError::Missing(
                    "AccountKey needs AccountName",
                ))?;
                Credential::SharedKey {
                    account,
                    key: Secret::new(k),
                }
            }
            (None, Some(s)) => Credential::Sas(Secret::new(s)),
            (None, None) => Credential::Anonymous,
        };
        if let Credential::SharedKey { key, .. } = &credential {
            decode_key(key).map_err(|_| ConnectionStringError::Invalid {
                key: "AccountKey",
                why: "not base64",
            })?;
        }
        let name = name.unwrap_or_else(|| {
            blob_endpoint
                .host_str()
                .and_then(|h| h.split('.').next())
                .unwrap_or("")
                .to_string()
        });
        Ok(Self {
            name,
            blob_endpoint,
            queue_endpoint,
            credential,
        })
    }

    /// The account with one service's endpoint replaced (the `endpoint` config key).
    pub fn with_endpoint(
        mut self,
        service: Service,
        endpoint: &str,
    ) -> Result<Self, ConnectionStringError> {
        let url = parse_endpoint(endpoint, "endpoint")?;
        match service {
            Service::Blob => self.blob_endpoint = url,
            Service::Queue => self.queue_endpoint = url,
        }
        Ok(self)
    }

    /// The URL of an entity (queue or container) of a service, with the SAS when there is one.
    pub fn entity_url(&self, service: Service, entity: &str) -> Url {
        let mut url = match service {
            Service::Blob => self.blob_endpoint.clone(),
            Service::Queue => self.queue_endpoint.clone(),
        };
        url.path_segments_mut()
            .expect("endpoints are base URLs")
            .pop_if_empty()
            .push(entity);
        if let Credential::Sas(sas) = &self.credential {
            url.set_query(Some(sas.expose()));
        }
        url
    }
}

/// A storage service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Blob service.
    Blob,
    /// Queue service.
    Queue,
}

fn dev_url(host: &str, port: u16) -> Url {
    Url::parse(&format!("http://{host}:{port}/{DEV_ACCOUNT}/")).expect("valid emulator URL")
}

fn parse_endpoint(s: &str, key: &'static str) -> Result<Url, ConnectionStringError> {
    let mut url = Url::parse(s).map_err(|_| ConnectionStringError::Invalid {
        key,
        why: "not a URL",
    })?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err(ConnectionStringError::Invalid {
            key,
            why: "must be an http(s) URL",
        });
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// The account key as bytes.
pub(crate) fn decode_key(key: &Secret) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(key.expose().trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage() {
        let a = Account::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(a.name, DEV_ACCOUNT);
        assert_eq!(
            a.queue_endpoint.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1/"
        );
        assert_eq!(
            a.entity_url(Service::Blob, "c").as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/c"
        );
        assert!(matches!(a.credential, Credential::SharedKey { .. }));
    }

    #[test]
    fn account_key_and_suffix() {
        let a = Account::parse(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn",
        )
        .unwrap();
        assert_eq!(
            a.blob_endpoint.as_str(),
            "https://acct.blob.core.chinacloudapi.cn/"
        );
        assert_eq!(
            a.entity_url(Service::Queue, "jobs").as_str(),
            "https://acct.queue.core.chinacloudapi.cn/jobs"
        );
    }

    #[test]
    fn explicit_endpoints_and_sas() {
        let a = Account::parse(
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;SharedAccessSignature=?sv=2020&sig=abc",
        )
        .unwrap();
        assert_eq!(a.name, "127");
        let url = a.entity_url(Service::Queue, "q");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1/q?sv=2020&sig=abc"
        );
        assert!(matches!(a.credential, Credential::Sas(_)));
        let a = a
            .with_endpoint(Service::Queue, "http://localhost:9/x")
            .unwrap();
        assert_eq!(a.queue_endpoint.as_str(), "http://localhost:9/x/");
    }

    #[test]
    fn bad_strings_never_echo_the_key() {
        let secret = "c2VjcmV0IGtleSE=not-base64!!";
        let errs = [
            Account::parse(&format!("AccountName=a;AccountKey={secret}")).unwrap_err(),
            Account::parse(&format!("AccountName=a;{secret}")).unwrap_err(),
            Account::parse("AccountName=a;c2VjcmV0IGtleSE").unwrap_err(),
            Account::parse(&format!("AccountKey={secret}")).unwrap_err(),
            Account::parse("AccountName=a;Bogus=1").unwrap_err(),
            Account::parse(&format!("BlobEndpoint={secret}")).unwrap_err(),
        ];
        for e in &errs {
            let text = e.to_string();
            assert!(!text.contains("c2VjcmV0"), "{text}");
        }
        assert_eq!(
            errs[0],
            ConnectionStringError::Invalid {
                key: "AccountKey",
                why: "not base64"
            }
        );
        assert_eq!(errs[1], ConnectionStringError::UnknownPart(2));
        assert_eq!(errs[2], ConnectionStringError::NotKeyValue(2));
        assert_eq!(
            errs[4].to_string(),
            "connection string: unknown key \"bogus\""
        );
    }
}
