//! The operator's command-line tools (`switchyard tail`, `publish`,
//! `token`): small clients of the router's public routes, and a token
//! minter that reads the secret the way the router does (SPEC §11,
//! "Operator tools"; docs/operations.md, "Command-line tools").

/// Tells the operator something on stderr, as `eprintln!` does; when
/// stderr is gone (a closed pipe: `switchyard tail 2>&1 | head`), nobody
/// is left to tell, and the tool ends with 0, as it does when stdout is
/// gone (where `eprintln!` would panic).
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::tools::note_line(format_args!($($arg)*))
    };
}

pub mod publish;
pub mod tail;
pub mod token;

use std::error::Error;
use std::path::Path;

/// What [`note!`] writes.
pub(crate) fn note_line(line: std::fmt::Arguments<'_>) {
    write_or_end(std::io::stderr().lock(), line);
}

/// Writes `line` to `out` at once; when `out` is gone (a closed pipe), the
/// tool has nobody left to tell and ends with 0.
pub(crate) fn write_or_end(mut out: impl std::io::Write, line: std::fmt::Arguments<'_>) {
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

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

/// A flag (or its environment variable) given an empty value, such as
/// `--token "$TOKEN"` after the command meant to set `TOKEN` failed. The
/// router takes an empty token or key for none, so going on would silently
/// connect without one.
#[derive(Debug, thiserror::Error)]
#[error(
    "{flag} is empty (did the command that made it fail?); to send none, leave out {flag} and unset {variable}"
)]
pub struct EmptyValue {
    /// The flag, as typed (`--token`).
    pub flag: &'static str,
    /// The environment variable the flag falls back to.
    pub variable: &'static str,
}

/// Refuses `value` when it was given but is empty; an absent one is fine.
pub fn refuse_empty(
    flag: &'static str,
    variable: &'static str,
    value: Option<&str>,
) -> Result<(), EmptyValue> {
    match value {
        Some("") => Err(EmptyValue { flag, variable }),
        _ => Ok(()),
    }
}

/// `error`, then each of its causes after `: `. An HTTP client's error says
/// only that the request failed; the cause a user can act on ("Connection
/// refused", a certificate problem) is further down the chain. A cause whose
/// text is already shown (some errors repeat their source's) is skipped.
pub fn with_causes(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let said = e.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_empty_value_is_refused() {
        assert!(refuse_empty("--token", "TOKEN", None).is_ok());
        assert!(refuse_empty("--token", "TOKEN", Some("t")).is_ok());
        let e = refuse_empty("--token", "TOKEN", Some("")).unwrap_err();
        assert!(e.to_string().starts_with("--token is empty"), "{e}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Quiet(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("client error: {0}")]
    struct Repeats(#[source] std::io::Error);

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused")
    }

    #[test]
    fn causes_follow_the_error_each_once() {
        assert_eq!(
            with_causes(&Quiet(refused())),
            "error sending request: Connection refused"
        );
        assert_eq!(
            with_causes(&Repeats(refused())),
            "client error: Connection refused"
        );
    }
}
