//! Log setup: `tracing` with `log.level` (or `RUST_LOG`) and `log.format`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Whether text written to a stream may carry ANSI colour: only on a
/// terminal (`is_terminal`), and never with `NO_COLOR` set to anything but
/// empty (no-color.org), so a file, a pipe or journald gets plain text.
/// Log lines and the command-line tools' output follow the same rule.
pub fn colour(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && is_terminal
}

/// Installs the global subscriber; later calls are ignored (tests start
/// several routers in one process).
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
