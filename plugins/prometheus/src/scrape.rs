//! The scrape loop: fetches each target's page on its interval and turns
//! it into a `queue.metrics` event (the page is read by [`exposition`](crate::exposition)).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use switchyard_plugin_api::{bump, Emitter, LogLevel};

use crate::config::{redact_url, ScrapeConfig};
use crate::engine::{emit, Counters};
use crate::events::QUEUE_METRICS;
use crate::exposition::{parse_page, queue_metrics};

/// Largest scrape response body read.
pub const MAX_SCRAPE_BYTES: u64 = 16 * 1024 * 1024;

/// GETs `url`; the error says why the scrape failed.
fn fetch(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let mut response = agent
        .get(url)
        .header("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
        .call()
        .map_err(|e| match e {
            ureq::Error::StatusCode(code) => format!("HTTP status {code}"),
            other => other.to_string(),
        })?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_SCRAPE_BYTES)
        .read_to_string()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(n) => format!("the page is larger than {n} bytes"),
            other => format!("reading the page: {other}"),
        })
}

/// Scrapes `target` every `interval` until `shutdown`: the first scrape
/// right away, each next one `interval` after the previous one started.
pub(crate) fn run<E: Emitter>(
    target: ScrapeConfig,
    emitter: E,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(target.timeout))
        .proxy(None)
        .max_redirects(3)
        .build()
        .into();
    let shown = redact_url(&target.url);
    let mut failing = false;
    let mut warned_empty = false;
    let mut warned_bad_lines = false;
    loop {
        let started = Instant::now();
        match fetch(&agent, &target.url) {
            Ok(text) => {
                if failing {
                    emitter.log(
                        LogLevel::Info,
                        &format!("prometheus: scraping {shown} works again"),
                    );
                    failing = false;
                }
                bump(&counters.scrapes);
                let page = parse_page(&text);
                if page.bad_lines > 0 && !warned_bad_lines {
                    warned_bad_lines = true;
                    emitter.log(
                        LogLevel::Warn,
                        &format!(
                            "prometheus: {shown}: skipped {} malformed exposition line(s)",
                            page.bad_lines
                        ),
                    );
                }
                let payload = queue_metrics(&target.metrics, &page);
                if payload.is_empty() {
                    bump(&counters.scrapes_empty);
                    if !warned_empty {
                        warned_empty = true;
                        let selectors: Vec<String> = target
                            .metrics
                            .iter()
                            .map(|(f, s)| format!("{f} = {s}"))
                            .collect();
                        emitter.log(
                            LogLevel::Warn,
                            &format!(
                                "prometheus: {shown}: no series matched any selector ({}); \
                                 no queue.metrics emitted",
                                selectors.join(", ")
                            ),
                        );
                    }
                } else {
                    let _ = emit(&emitter, &counters, QUEUE_METRICS, &Value::Object(payload));
                }
            }
            Err(why) => {
                let n = bump(&counters.scrape_failures);
                // Log the first failure of a run of failures, then every 100th.
                if !failing || n % 100 == 0 {
                    emitter.log(
                        LogLevel::Warn,
                        &format!("prometheus: scraping {shown} failed: {why}"),
                    );
                }
                failing = true;
            }
        }
        let next = started + target.interval;
        if !crate::sleep_until(next, &shutdown) {
            return;
        }
    }
}
