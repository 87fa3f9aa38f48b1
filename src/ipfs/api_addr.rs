//! The address of an IPFS node's RPC API, from the forms a user may type after `--ipfsapi`.
//!
//! Accepted forms (the command line passes its one or two raw values):
//! - `PORT` — on 127.0.0.1 (the oldest form of the flag, `--ipfsapi 5001`);
//! - `HOST PORT` — two values (the original scripts' form, `--ipfsapi 127.0.0.1 5001`);
//! - `HOST:PORT`, `[V6ADDR]:PORT`;
//! - `http://HOST:PORT` or `https://HOST:PORT`, with an optional trailing `/` or `/api/v0`;
//! - a multiaddr `/ip4/HOST/tcp/PORT`, `/ip6/ADDR/tcp/PORT`, `/dns/NAME/tcp/PORT` (also `dns4`,
//!   `dns6`), with an optional trailing `/http` or `/https` (kubo's `api` file and the daemon's
//!   log print it so).
//!
//! ```
//! use nixipfs::ipfs::api_addr::ApiAddr;
//! let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
//! let a = ApiAddr::parse(&args(&["127.0.0.1", "5001"])).unwrap();
//! assert_eq!(a.to_string(), "http://127.0.0.1:5001");
//! assert_eq!(ApiAddr::parse(&args(&["/ip4/10.0.0.2/tcp/5002"])).unwrap().port(), 5002);
//! assert_eq!(ApiAddr::parse(&args(&["5003"])).unwrap().url(), "http://127.0.0.1:5003");
//! assert!(ApiAddr::parse(&args(&["127.0.0.1"])).is_err());
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The default API address of kubo and of the original scripts: 127.0.0.1, port 5001.
pub const DEFAULT_PORT: u16 = 5001;

/// Why an `--ipfsapi` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiAddrError {
    /// No value at all.
    #[error("no IPFS API address given")]
    Empty,
    /// More than two values.
    #[error("an IPFS API address is one or two values (PORT, HOST PORT, http://HOST:PORT or /ip4/HOST/tcp/PORT), got {0}: {1:?}")]
    TooManyValues(usize, Vec<String>),
    /// A port that is not a number in 1..=65535.
    #[error("invalid IPFS API port {0:?} (expected a number from 1 to 65535)")]
    BadPort(String),
    /// A host that is empty or holds characters no host name or address has.
    #[error("invalid IPFS API host {0:?}")]
    BadHost(String),
    /// A URL with a scheme other than http or https, or with a path, query or user.
    #[error("invalid IPFS API URL {0:?}: {1}")]
    BadUrl(String, &'static str),
    /// A multiaddr this parser does not understand.
    #[error("unsupported IPFS API multiaddr {0:?} (expected /ip4/HOST/tcp/PORT, /ip6/ADDR/tcp/PORT or /dns[46]/NAME/tcp/PORT)")]
    BadMultiaddr(String),
    /// One value naming a host but no port.
    #[error("IPFS API address {0:?} has no port (expected PORT, HOST PORT, HOST:PORT, http://HOST:PORT or /ip4/HOST/tcp/PORT)")]
    MissingPort(String),
}

/// Where a node's RPC API listens: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiAddr {
    https: bool,
    /// Host name, IPv4 address, or IPv6 address without brackets.
    host: String,
    port: u16,
}

impl Default for ApiAddr {
    /// `http://127.0.0.1:5001`.
    fn default() -> Self {
        ApiAddr::new("127.0.0.1", DEFAULT_PORT).expect("the default host is valid")
    }
}

impl ApiAddr {
    /// An `http://` address from a host (name, IPv4 or IPv6 address) and a port.
    pub fn new(host: &str, port: u16) -> Result<ApiAddr, ApiAddrError> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        check_host(host)?;
        if port == 0 {
            return Err(ApiAddrError::BadPort("0".to_string()));
        }
        Ok(ApiAddr {
            https: false,
            host: host.to_string(),
            port,
        })
    }

    /// Parses the raw value(s) given after `--ipfsapi` (see the module documentation).
    pub fn parse(values: &[String]) -> Result<ApiAddr, ApiAddrError> {
        match values {
            [] => Err(ApiAddrError::Empty),
            [one] => Self::parse_one(one.trim()),
            [host, port] => ApiAddr::new(host.trim(), parse_port(port.trim())?),
            more => Err(ApiAddrError::TooManyValues(more.len(), more.to_vec())),
        }
    }

    fn parse_one(value: &str) -> Result<ApiAddr, ApiAddrError> {
        if value.is_empty() {
            return Err(ApiAddrError::Empty);
        }
        if value.bytes().all(|b| b.is_ascii_digit()) {
            return ApiAddr::new("127.0.0.1", parse_port(value)?);
        }
        if value.starts_with('/') {
            return parse_multiaddr(value);
        }
        if let Some((scheme, rest)) = value.split_once("://") {
            let https = match scheme.to_ascii_lowercase().as_str() {
                "http" => false,
                "https" => true,
                _ => {
                    return Err(ApiAddrError::BadUrl(
                        value.to_string(),
                        "scheme is not http or https",
                    ))
                }
            };
            let rest = rest.trim_end_matches('/');
            let authority = rest.strip_suffix("/api/v0").unwrap_or(rest);
            if authority.contains(['/', '?', '#', '@']) {
                return Err(ApiAddrError::BadUrl(
                    value.to_string(),
                    "only scheme, host and port are allowed",
                ));
            }
            let (host, port) = match split_host_port(authority) {
                Some((host, port)) => (host, parse_port(port)?),
                None => (authority, if https { 443 } else { 80 }),
            };
            let mut addr = ApiAddr::new(host, port)?;
            addr.https = https;
            return Ok(addr);
        }
        match split_host_port(value) {
            Some((host, port)) => ApiAddr::new(host, parse_port(port)?),
            None => Err(ApiAddrError::MissingPort(value.to_string())),
        }
    }

    /// Host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL, e.g. `http://127.0.0.1:5001` (no trailing slash).
    pub fn url(&self) -> String {
        self.to_string()
    }

    /// The URL of an RPC command, e.g. `http://127.0.0.1:5001/api/v0/files/stat`.
    pub fn command_url(&self, command: &str) -> String {
        format!("{self}/api/v0/{command}")
    }
}

impl fmt::Display for ApiAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(text: &str) -> Result<u16, ApiAddrError> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(ApiAddrError::BadPort(text.to_string())),
    }
}

/// Splits `host:port` or `[v6]:port`; `None` when there is no port.
fn split_host_port(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = text.rsplit_once(':')?;
    if host.contains(':') {
        // A bare IPv6 address without brackets: no port can be told apart.
        return None;
    }
    Some((host, port))
}

fn check_host(host: &str) -> Result<(), ApiAddrError> {
    let bad = || ApiAddrError::BadHost(host.to_string());
    if host.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    if host.contains(':') {
        return host.parse::<Ipv6Addr>().map(|_| ()).map_err(|_| bad());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host.parse::<Ipv4Addr>().map(|_| ()).map_err(|_| bad());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.trim_end_matches('.').split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

fn parse_multiaddr(text: &str) -> Result<ApiAddr, ApiAddrError> {
    let bad = || ApiAddrError::BadMultiaddr(text.to_string());
    let parts: Vec<&str> = text.trim_end_matches('/').split('/').skip(1).collect();
    let (proto, host, tcp, port, rest) = match parts.as_slice() {
        [proto, host, tcp, port, rest @ ..] => (*proto, *host, *tcp, *port, rest),
        _ => return Err(bad()),
    };
    if tcp != "tcp" {
        return Err(bad());
    }
    match proto {
        "ip4" => {
            host.parse::<Ipv4Addr>().map_err(|_| bad())?;
        }
        "ip6" => {
            host.parse::<Ipv6Addr>().map_err(|_| bad())?;
        }
        "dns" | "dns4" | "dns6" => {}
        _ => return Err(bad()),
    }
    let https = match rest {
        [] | ["http"] => false,
        ["https"] | ["tls", "http"] => true,
        _ => return Err(bad()),
    };
    let mut addr = ApiAddr::new(host, parse_port(port)?)?;
    addr.https = https;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<ApiAddr, ApiAddrError> {
        ApiAddr::parse(&values.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_accepted_form() {
        let cases: &[(&[&str], &str)] = &[
            (&["5001"], "http://127.0.0.1:5001"),
            (&["127.0.0.1", "5001"], "http://127.0.0.1:5001"),
            (&["localhost", "5002"], "http://localhost:5002"),
            (&["::1", "5001"], "http://[::1]:5001"),
            (&["[::1]", "5001"], "http://[::1]:5001"),
            (&["ipfs.example.org:5001"], "http://ipfs.example.org:5001"),
            (&["[::1]:5001"], "http://[::1]:5001"),
            (&["http://127.0.0.1:5001"], "http://127.0.0.1:5001"),
            (&["http://127.0.0.1:5001/"], "http://127.0.0.1:5001"),
            (&["http://127.0.0.1:5001/api/v0"], "http://127.0.0.1:5001"),
            (&["HTTP://node:8080"], "http://node:8080"),
            (&["https://node.example"], "https://node.example:443"),
            (&["http://[fe80::1]:5001"], "http://[fe80::1]:5001"),
            (&["/ip4/127.0.0.1/tcp/5001"], "http://127.0.0.1:5001"),
            (&["/ip4/127.0.0.1/tcp/45123/http"], "http://127.0.0.1:45123"),
            (&["/ip6/::1/tcp/5001"], "http://[::1]:5001"),
            (&["/dns4/ipfs.local/tcp/5001/"], "http://ipfs.local:5001"),
            (&["/dns/node/tcp/443/https"], "https://node:443"),
            (&[" 5001 "], "http://127.0.0.1:5001"),
        ];
        for (values, expected) in cases {
            let addr = parse(values).unwrap_or_else(|e| panic!("{values:?}: {e}"));
            assert_eq!(addr.to_string(), *expected, "{values:?}");
        }
        let addr = parse(&["/ip4/10.1.2.3/tcp/5001"]).unwrap();
        assert_eq!((addr.host(), addr.port()), ("10.1.2.3", 5001));
        assert_eq!(
            addr.command_url("files/stat"),
            "http://10.1.2.3:5001/api/v0/files/stat"
        );
        assert_eq!(ApiAddr::default().to_string(), "http://127.0.0.1:5001");
    }

    #[test]
    fn refused_forms_say_why() {
        assert_eq!(parse(&[]), Err(ApiAddrError::Empty));
        assert_eq!(parse(&[""]), Err(ApiAddrError::Empty));
        assert!(matches!(
            parse(&["a", "1", "2"]),
            Err(ApiAddrError::TooManyValues(3, _))
        ));
        for port in ["0", "65536", "-1", "50x", "+5001"] {
            assert_eq!(
                parse(&["127.0.0.1", port]),
                Err(ApiAddrError::BadPort(port.to_string())),
                "{port}"
            );
        }
        assert_eq!(
            parse(&["99999"]),
            Err(ApiAddrError::BadPort("99999".into()))
        );
        assert_eq!(
            parse(&["127.0.0.1"]),
            Err(ApiAddrError::MissingPort("127.0.0.1".into()))
        );
        assert!(matches!(
            parse(&["bad host", "5001"]),
            Err(ApiAddrError::BadHost(_))
        ));
        assert!(matches!(
            parse(&["1.2.3.999", "5001"]),
            Err(ApiAddrError::BadHost(_))
        ));
        assert!(matches!(
            parse(&["-x-", "5001"]),
            Err(ApiAddrError::BadHost(_))
        ));
        assert!(matches!(
            parse(&["ftp://host:21"]),
            Err(ApiAddrError::BadUrl(_, _))
        ));
        assert!(matches!(
            parse(&["http://host:5001/other"]),
            Err(ApiAddrError::BadUrl(_, _))
        ));
        assert!(matches!(
            parse(&["http://user@host:5001"]),
            Err(ApiAddrError::BadUrl(_, _))
        ));
        for bad in [
            "/ip4/127.0.0.1/udp/5001",
            "/ip4/127.0.0.1",
            "/ip4/localhost/tcp/5001",
            "/unix/tmp/sock",
            "/ip4/127.0.0.1/tcp/5001/ws",
        ] {
            assert!(
                matches!(parse(&[bad]), Err(ApiAddrError::BadMultiaddr(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&["/ip4/127.0.0.1/tcp/0"]),
            Err(ApiAddrError::BadPort(_))
        ));
        assert!(matches!(parse(&["::1"]), Err(ApiAddrError::MissingPort(_))));
        assert!(matches!(
            parse(&["bad host:5001"]),
            Err(ApiAddrError::BadHost(_))
        ));
        let message = parse(&["127.0.0.1", "port"]).unwrap_err().to_string();
        assert!(message.contains("\"port\""), "{message}");
    }
}
