//! The `switchyard` binary: run the router, `switchyard check` a config,
//! `switchyard codegen` the client contracts of one, or use the operator's
//! tools: `tail`, `publish` and `token`.

mod codegen;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::app::Options;
use switchyard::reload::ReloadError;
use switchyard::tools::{self, publish, tail, token};
use switchyard::{check, logging, reload, runtime};

/// mimalloc (its v2 line) rather than glibc's malloc: after 20 clients made
/// the router queue 2 GB of replies, glibc kept 1.8 GB once they were gone
/// and mimalloc 0.2 GB, at equal CPU per delivery; v2 holds 3.5 KiB per idle
/// connection where v3 held 3.8–4.3 (BENCHMARKS.md, "Misbehaving clients").
/// Built without the `mimalloc` feature, the binary uses the system's malloc
/// so that heap profilers see every allocation.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A real-time event router.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CONFIG",
        default_value = "config.toml"
    )]
    config: PathBuf,
    /// Listen here instead of `server.listen` (fixed for the life of the process).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and load every enabled plugin, without starting anything.
    /// With `--against URL`, ask that running router what the file would change instead.
    Check {
        /// A running router's base URL (`http://127.0.0.1:8080`): print the impact of
        /// reloading it with this file (`POST /api/admin/reload?dry_run=true`), applying nothing.
        #[arg(long)]
        against: Option<String>,
        /// The admin key for `--against` (not needed from loopback when the router has none).
        #[arg(long, env = "SWITCHYARD_ADMIN_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Generate client code from the configuration's registry, as the router would serve it.
    Codegen {
        #[command(subcommand)]
        target: Target,
    },
    /// Print the live events of an endpoint, recovering across reconnects.
    ///
    /// Connects a WebSocket to the router and prints every event it
    /// receives: on a terminal one readable line each (time, type,
    /// channel:sequence, payload; coloured unless NO_COLOR is set), with
    /// --json one JSON line each, exactly as received. It keeps the last
    /// position of every channel and, when the connection drops,
    /// reconnects (waiting up to 5 s between attempts) with `since`, so
    /// nothing the router still holds is missed. Lags, gaps that could not
    /// be recovered and reconnects are reported on stderr. Ctrl-C exits 0;
    /// a connection the router refuses (no token, a bad one, an unknown
    /// endpoint) exits 1.
    Tail {
        /// The router's URL [default: server.listen of --config if the file
        /// exists, else http://127.0.0.1:8080].
        #[arg(long, env = "SWITCHYARD_URL")]
        url: Option<String>,
        /// The WebSocket endpoint.
        #[arg(long, default_value = "/ws/events")]
        endpoint: String,
        /// Comma-separated patterns to subscribe to (`alert.*,job.progress`);
        /// all events of the endpoint when absent.
        #[arg(long)]
        events: Option<String>,
        /// Start after these positions: `channel:epoch:sequence,…` (events
        /// after them are replayed from history first).
        #[arg(long)]
        since: Option<String>,
        /// Print each event as one JSON line, exactly as received.
        #[arg(long)]
        json: bool,
        /// A client token (JWT), for endpoints that require one.
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Publish one event and print its stamp (`channel:epoch:sequence`).
    ///
    /// Posts `{"type":TYPE,"payload":PAYLOAD}` to POST /api/events. Exits 0
    /// when accepted; 1 when refused (the router's error code and message,
    /// `did_you_mean` and every invalid field on stderr) or unreachable; 2
    /// when PAYLOAD is not JSON (checked before anything is sent).
    Publish {
        /// The event type (its canonical name or an alias), e.g. alert.created.
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// The payload as JSON text, e.g. '{"id":"a1","severity":"high"}'.
        payload: String,
        /// The router's URL [default: server.listen of --config if the file
        /// exists, else http://127.0.0.1:8080].
        #[arg(long, env = "SWITCHYARD_URL")]
        url: Option<String>,
        /// The publish key (sent as Authorization: Bearer).
        #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
        key: Option<String>,
        /// The event's correlation_id.
        #[arg(long)]
        correlation_id: Option<String>,
        /// The event's idempotency_key: publishing it again within the
        /// router's window returns the first stamp instead of a new event.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Mint a client token (HS256 JWT) for local use, and print it.
    ///
    /// Signs with the secret the configuration names, read as the router
    /// reads it: auth.jwt.secret_file or the variable auth.jwt.secret_env,
    /// else the first HS256 key of auth.jwt.keys (the token then carries
    /// its kid). Adds `iss` / `aud` when the configuration requires them.
    /// Fails, naming what is missing, when no HS256 secret is configured or
    /// its variable is unset.
    Token {
        /// The user (`sub` claim).
        // Not empty: the router refuses a token whose `sub` is empty, so an
        // unset `--sub "$USER"` must fail here, not at the first connection.
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        sub: String,
        /// How long the token lives: 30s, 15m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = token::parse_ttl)]
        ttl: u64,
        /// Only these channels may be received (`channels` claim), comma-separated.
        #[arg(long, value_delimiter = ',', value_parser = token::parse_channel)]
        channels: Option<Vec<String>>,
        /// Sign with this auth.jwt.keys entry.
        #[arg(long)]
        kid: Option<String>,
    },
}

/// What `codegen` writes.
#[derive(Subcommand)]
enum Target {
    /// TypeScript declarations (the text of GET /api/websocket/types.ts).
    Typescript {
        /// Write here instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options {
        config_path: cli.config,
        listen: cli.listen,
    };
    match cli.command {
        Some(Command::Check {
            against: Some(url),
            key,
        }) => check_against(&options, &url, key.as_deref()),
        Some(Command::Check { against: None, .. }) => match check::run(&options) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_refusal(&options, &e);
                ExitCode::FAILURE
            }
        },
        Some(Command::Codegen {
            target: Target::Typescript { out },
        }) => match codegen::typescript(&options) {
            Ok(text) => match codegen::emit(&text, out.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                print_refusal(&options, &e);
                ExitCode::FAILURE
            }
        },
        Some(Command::Tail {
            url,
            endpoint,
            events,
            since,
            json,
            token,
        }) => tail::run(tail::Tail {
            url: tools::base_url(url.as_deref(), &options.config_path),
            endpoint,
            events,
            since,
            json,
            token,
        }),
        Some(Command::Publish {
            event_type,
            payload,
            url,
            key,
            correlation_id,
            idempotency_key,
        }) => publish::run(&publish::Publish {
            url: tools::base_url(url.as_deref(), &options.config_path),
            event_type,
            payload,
            key,
            correlation_id,
            idempotency_key,
        }),
        Some(Command::Token {
            sub,
            ttl,
            channels,
            kid,
        }) => match token::mint(&token::Mint {
            config: options.config_path,
            sub,
            ttl_s: ttl,
            channels,
            kid,
        }) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard token: {e:#}");
                ExitCode::FAILURE
            }
        },
        None => match serve(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `check --against`: the impact the running router reports for the file.
fn check_against(options: &Options, url: &str, key: Option<&str>) -> ExitCode {
    let answered = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(check::against(&options.config_path, url, key))
                .map_err(|e| e.to_string())
        });
    match answered {
        Ok(impact) => {
            print!("{impact}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(options: Options) -> anyhow::Result<()> {
    let tokio = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    tokio.block_on(async {
        let plugins = switchyard::plugin_host::PluginHost::default();
        let prepared = reload::prepare(&options, &plugins).map_err(|e| refused(&options, &e))?;
        logging::init(&prepared.config.log);
        for warning in prepared
            .warnings
            .iter()
            .cloned()
            .chain(check::fd_warning(&prepared.config))
        {
            tracing::warn!("{warning}");
        }
        let refusal = options.clone();
        let app = match reload::start(options, plugins, prepared).await {
            Ok(app) => app,
            Err(ReloadError::Cluster(e)) => anyhow::bail!("not started: {e}"),
            Err(e) => return Err(refused(&refusal, &e)),
        };
        Ok(runtime::run(app).await?)
    })
}

/// Prints every problem of a refused configuration, one a line, as a
/// reload logs them.
fn print_refusal(options: &Options, e: &ReloadError) {
    eprintln!("{} is not valid:", options.config_path.display());
    let problems = e.problems();
    if !problems.is_empty() {
        eprintln!("{}", check::problem_list(&problems));
    }
}

/// [`print_refusal`], then the error that ends the process.
fn refused(options: &Options, e: &ReloadError) -> anyhow::Error {
    print_refusal(options, e);
    anyhow::anyhow!(
        "not started: {} is not valid",
        options.config_path.display()
    )
}
