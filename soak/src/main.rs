//! `switchyard-soak`: see `docs/soak.md`.

use std::process::ExitCode;

use clap::Parser;
use switchyard_soak::{run, Options};

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    let json = options.json.clone();
    let report = match run(options).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("switchyard-soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.render());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("switchyard-soak: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
