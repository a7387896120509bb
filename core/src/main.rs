//! The `switchyard` binary: run the router, `switchyard check` a config, or
//! `switchyard codegen` the client contracts of one.

mod codegen;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::app::Options;
use switchyard::reload::ReloadError;
use switchyard::{check, logging, reload, runtime};

/// mimalloc (its v2 line) rather than glibc's malloc: after 20 clients made
/// the router queue 2 GB of replies, glibc kept 1.8 GB once they were gone
/// and mimalloc 0.2 GB, at equal CPU per delivery; v2 holds 3.5 KiB per idle
/// connection where v3 held 3.8–4.3 (BENCHMARKS.md, "Misbehaving clients").
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
    for p in e.problems() {
        eprintln!("  - {p}");
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
