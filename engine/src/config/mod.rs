//! The configuration: `config.toml` plus `SWITCHYARD__SECTION__KEY`
//! environment overrides, read with the `config` crate, validated, and
//! turned into an immutable [`Config`].
//!
//! Validation is static and complete: every problem in the file is
//! reported at once, each naming its dotted key, the value and what to do.
//! What depends on the plugins' own declarations (type conflicts, whether
//! an endpoint's channel exists) is checked by the registry afterwards.
//! Key files and secret variables are named here but read by the auth
//! module, so a reload re-reads them.

mod build;
mod error;
mod load;
mod model;
mod read;

pub use error::{ConfigError, Problem};
pub use load::{load, load_all, load_candidate, load_with_env, Loaded};
pub use model::{
    AuthConfig, AuthMode, ChannelConfig, ClientRateLimit, ClusterConfig, ClusterEngine, Config,
    EndpointConfig, EventTypeConfig, JwtAlgorithm, JwtConfig, JwtKeyConfig, KeySource, LogConfig,
    LogFormat, OnUserLimit, PluginConfig, PublishRateLimit, ReloadConfig, RouteConfig,
    ServerConfig, SlowConsumer, TlsConfig,
};

#[cfg(test)]
mod tests;
