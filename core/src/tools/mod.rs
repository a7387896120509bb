//! The operator's command-line tools (`switchyard tail`, `publish`,
//! `token`): small clients of the router's public routes, and a token
//! minter that reads the secret the way the router does (SPEC §11,
//! "Operator tools"; docs/operations.md, "Command-line tools").

pub mod publish;
pub mod tail;
pub mod token;

use std::path::Path;

/// Where the tools find the router when no `--url` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The router's base URL: `url` when given, else `server.listen` of the
/// config at `config` when that file exists and loads (a wildcard address
/// reached over loopback), else [`DEFAULT_URL`]. No trailing `/`.
pub fn base_url(url: Option<&str>, config: &Path) -> String {
    if let Some(url) = url {
        return url.trim_end_matches('/').to_owned();
    }
    if config.is_file() {
        if let Ok(loaded) = crate::config::load(config) {
            let server = &loaded.config.server;
            let mut addr = server.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            if addr.port() != 0 {
                return format!("http://{addr}");
            }
        }
    }
    DEFAULT_URL.to_owned()
}
