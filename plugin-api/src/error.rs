//! [`PluginError`]: why a plugin's `create`, `start` or `deliver` failed.
//!
//! The router shows the error's text in its log and in `switchyard check`
//! (see docs/plugins.md, "The lifecycle"), so each variant says what failed and
//! names the key, file, address or thread involved.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a plugin call failed. Its `Display` is the message the router shows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The instance's `[plugins.config]` table was refused; the text names
    /// the key and says what was expected (as [`crate::config::Table`] does).
    #[error("{0}")]
    Config(String),
    /// The router handed over a config that is not JSON (a broken host).
    #[error("config is not valid JSON: {0}")]
    ConfigJson(#[source] serde_json::Error),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// A plugin thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// Why the OS refused.
        #[source]
        source: io::Error,
    },
    /// A file the plugin needs could not be used.
    #[error("{plugin}: cannot {action} {}: {source}", path.display())]
    File {
        /// The plugin's name, which starts the message.
        plugin: &'static str,
        /// What was tried: `open`, `write`, ….
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// `start` was refused for a reason of the plugin's own (the text says which).
    #[error("{0}")]
    Start(String),
    /// A routed event could not be handled (the text says why).
    #[error("{0}")]
    Deliver(String),
    /// A routed event was not UTF-8 (a broken host).
    #[error("event is not valid UTF-8: {0}")]
    EventNotUtf8(#[source] std::str::Utf8Error),
    /// The host passed a null vtable to `start` (a broken host).
    #[error("host passed a null vtable")]
    NullHost,
    /// The host called `start` on an instance that was already started.
    #[error("the instance was already started")]
    AlreadyStarted,
    /// The host called `deliver` on an instance that is not running.
    #[error("the instance is not running")]
    NotRunning,
}

impl PluginError {
    /// A refused config, from the message that names the key.
    pub fn config(message: impl Into<String>) -> PluginError {
        PluginError::Config(message.into())
    }

    /// A routed event that could not be handled, from the reason.
    pub fn deliver(message: impl Into<String>) -> PluginError {
        PluginError::Deliver(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let denied = || io::Error::new(io::ErrorKind::PermissionDenied, "denied");
        let file = PluginError::File {
            plugin: "audit-log",
            action: "open",
            path: "/var/a.log".into(),
            source: denied(),
        };
        assert_eq!(
            file.to_string(),
            "audit-log: cannot open /var/a.log: denied"
        );
        let spawn = PluginError::Spawn {
            name: "beat".into(),
            source: denied(),
        };
        assert_eq!(spawn.to_string(), "cannot start thread beat: denied");
        let listen = PluginError::Listen {
            addr: "127.0.0.1:9".parse().unwrap(),
            source: denied(),
        };
        assert_eq!(listen.to_string(), "cannot listen on 127.0.0.1:9: denied");
        assert_eq!(PluginError::config("`k` is bad").to_string(), "`k` is bad");
    }
}
