//! What the tool reads from (and does to) the router besides events:
//! capabilities, `/metrics`, the connections list, /proc, and reloads.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::{Phase, ReloadReport, ReloadVia, RssReport, Shared};

/// The channel `event_type` is stamped on, checked to be carried by
/// `endpoint`, asked of the first node that answers.
pub(crate) async fn channel_of(
    http: &reqwest::Client,
    bases: &[reqwest::Url],
    event_type: &str,
    endpoint: &str,
) -> anyhow::Result<String> {
    let mut last = None;
    for base in bases {
        match capabilities(http, base).await {
            Ok(caps) => return channel_in(&caps, event_type, endpoint),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no --url")))
}

async fn capabilities(http: &reqwest::Client, base: &reqwest::Url) -> anyhow::Result<Value> {
    let url = base.join("/api/websocket/capabilities")?;
    http.get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach the router at {base}"))?
        .error_for_status()?
        .json()
        .await
        .context("capabilities are not JSON")
}

fn channel_in(caps: &Value, event_type: &str, endpoint: &str) -> anyhow::Result<String> {
    let Some(channel) = caps["event_registry"][event_type]["channel"].as_str() else {
        bail!("the router has no event type `{event_type}` (see /api/websocket/capabilities)");
    };
    let carried = caps["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["path"] == endpoint)
        .any(|e| {
            e["channels"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == channel))
        });
    if !carried {
        bail!("endpoint `{endpoint}` does not carry channel `{channel}` of `{event_type}`");
    }
    Ok(channel.to_owned())
}

/// The counters read from `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Metrics {
    pub reloads_applied: u64,
    pub reloads_refused: u64,
    pub dropped_slow_consumer: u64,
}

impl Metrics {
    /// The sum over every node that answers (a node down adds nothing; a
    /// node restarted during the run starts its counters again).
    pub async fn fetch_all(http: &reqwest::Client, bases: &[reqwest::Url]) -> Metrics {
        let mut total = Metrics::default();
        for base in bases {
            if let Ok(m) = Metrics::fetch(http, base).await {
                total.reloads_applied += m.reloads_applied;
                total.reloads_refused += m.reloads_refused;
                total.dropped_slow_consumer += m.dropped_slow_consumer;
            }
        }
        total
    }

    pub async fn fetch(http: &reqwest::Client, base: &reqwest::Url) -> anyhow::Result<Metrics> {
        let text = http
            .get(base.join("/metrics")?)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Metrics {
            reloads_applied: sample(
                &text,
                "switchyard_config_reloads_total",
                "result=\"applied\"",
            ),
            reloads_refused: sample(
                &text,
                "switchyard_config_reloads_total",
                "result=\"refused\"",
            ),
            dropped_slow_consumer: sample(
                &text,
                "switchyard_dropped_total",
                "reason=\"slow_consumer\"",
            ),
        })
    }
}

/// Sums the samples of `name` whose labels contain `label`.
fn sample(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None => ("", rest),
            };
            labels
                .contains(label)
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .map(|v| v as u64)
        .sum()
}

/// What the connections list showed, by connection id.
#[derive(Default)]
pub(crate) struct Seen {
    /// The list could be read.
    pub ok: bool,
    /// Highest `dropped` and `queue_depth` seen per connection.
    pub by_id: HashMap<String, (u64, u64)>,
}

/// Polls `/api/websocket/connections` every second until the run stops.
pub(crate) async fn watch_connections(shared: Arc<Shared>) -> Seen {
    let mut seen = Seen::default();
    if shared.options.stalled == 0 {
        return seen;
    }
    loop {
        match list_connections(&shared, &mut seen).await {
            Ok(()) => seen.ok = true,
            Err(e) => {
                if !seen.ok {
                    shared.live.notes.push(format!(
                        "cannot read /api/websocket/connections ({e}); stalled drops come from \
                         /metrics only"
                    ));
                    return seen;
                }
            }
        }
        for _ in 0..10 {
            if *shared.phase.borrow() == Phase::Stop {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads the connections list from the first node that answers (in a
/// cluster every node lists every node's connections).
async fn list_connections(shared: &Shared, seen: &mut Seen) -> anyhow::Result<()> {
    let start = shared.random_node(&mut rand::rng());
    let n = shared.bases.len();
    let mut last = None;
    for i in 0..n {
        let base = &shared.bases[(start + i) % n];
        let mut attempt = Seen::default();
        match list_connections_of(shared, base, &mut attempt).await {
            Ok(()) => {
                for (id, (dropped, depth)) in attempt.by_id {
                    let entry = seen.by_id.entry(id).or_default();
                    entry.0 = entry.0.max(dropped);
                    entry.1 = entry.1.max(depth);
                }
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no --url")))
}

async fn list_connections_of(
    shared: &Shared,
    base: &reqwest::Url,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    let mut after: Option<String> = None;
    loop {
        let mut url = base.join("/api/websocket/connections")?;
        url.query_pairs_mut()
            .append_pair("endpoint", &shared.options.endpoint)
            .append_pair("limit", "1000");
        if let Some(a) = &after {
            url.query_pairs_mut().append_pair("after", a);
        }
        let mut request = shared.http.get(url);
        if let Some(key) = &shared.options.admin_key {
            request = request.bearer_auth(key);
        }
        let page: Value = request.send().await?.error_for_status()?.json().await?;
        for c in page["connections"].as_array().into_iter().flatten() {
            let Some(id) = c["id"].as_str() else { continue };
            let entry = seen.by_id.entry(id.to_owned()).or_default();
            entry.0 = entry.0.max(c["dropped"].as_u64().unwrap_or(0));
            entry.1 = entry.1.max(c["queue_depth"].as_u64().unwrap_or(0));
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(()),
        }
    }
}

/// How many of `ids` the router still lists once every client has gone
/// (waiting up to 5 s for it to notice); `None` if the list cannot be read.
pub(crate) async fn leftover(shared: &Shared, ids: &HashSet<String>) -> Option<u64> {
    let mut left = 0;
    for _ in 0..25 {
        let mut seen = Seen::default();
        list_connections(shared, &mut seen).await.ok()?;
        left = seen.by_id.keys().filter(|id| ids.contains(*id)).count() as u64;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Some(left)
}

fn read_status(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples VmRSS every 200 ms until the run stops.
pub(crate) async fn sample_rss(shared: Arc<Shared>, pid: u32) -> RssReport {
    let mut report = RssReport {
        pid,
        ..RssReport::default()
    };
    loop {
        match read_status(pid) {
            Some((rss, hwm)) => {
                if report.samples == 0 {
                    report.start_kib = rss;
                }
                report.samples += 1;
                report.peak_kib = report.peak_kib.max(rss);
                report.end_kib = rss;
                report.hwm_kib = hwm;
                shared.live.rss_kib.store(rss, Ordering::Relaxed);
            }
            None if report.samples == 0 => {
                shared
                    .live
                    .notes
                    .push(format!("cannot read /proc/{pid}/status"));
                return report;
            }
            None => {
                shared
                    .live
                    .notes
                    .push(format!("process {pid} went away during the run"));
                return report;
            }
        }
        if *shared.phase.borrow() == Phase::Stop {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const MARKER: &str = "\n# switchyard-soak: reload marker (a comment; removed at the end)\n";

/// Writes `content` to `path` by a rename, as editors do, keeping permissions.
fn replace_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.soak-tmp"));
    std::fs::write(&tmp, content)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path)
}

/// Triggers a reload every `--reload-every` while the run goes on.
pub(crate) async fn reload_loop(shared: Arc<Shared>) -> ReloadReport {
    let options = &shared.options;
    let mut report = ReloadReport::default();
    if options.reload_every.is_zero() {
        return report;
    }
    report.via = Some(options.reload_via);
    let original = match (&options.reload_via, &options.config) {
        (ReloadVia::File, Some(path)) => match std::fs::read(path) {
            Ok(bytes) => Some((path.clone(), bytes)),
            Err(e) => {
                shared
                    .live
                    .notes
                    .push(format!("cannot read {}: {e}; no reloads", path.display()));
                return report;
            }
        },
        _ => None,
    };
    let mut marked = false;
    let mut tick = tokio::time::interval(options.reload_every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if *shared.phase.borrow() != Phase::Run {
            break;
        }
        report.triggered += 1;
        shared.live.reloads.fetch_add(1, Ordering::Relaxed);
        let ok = match &original {
            Some((path, bytes)) => {
                marked = !marked;
                let mut content = bytes.clone();
                if marked {
                    content.extend_from_slice(MARKER.as_bytes());
                }
                replace_file(path, &content)
                    .map_err(|e| format!("rewriting {}: {e}", path.display()))
            }
            None => {
                let mut result = Ok(());
                for base in &shared.bases {
                    match http_reload(&shared, base).await {
                        Ok(()) => {}
                        Err(Reload::Unreachable) => report.unreachable += 1,
                        Err(Reload::Refused(e)) => result = Err(e),
                    }
                }
                result
            }
        };
        if let Err(e) = ok {
            report.failed += 1;
            if report.failed <= 3 {
                shared.live.notes.push(format!("reload failed: {e}"));
            }
        }
    }
    if let Some((path, bytes)) = &original {
        if marked {
            if let Err(e) = replace_file(path, bytes) {
                shared.live.notes.push(format!(
                    "could not restore {}: {e} (remove the soak marker line by hand)",
                    path.display()
                ));
            }
        }
    }
    report
}

/// Why an HTTP reload did not happen.
enum Reload {
    /// The node could not be reached (down).
    Unreachable,
    /// It answered something else than success.
    Refused(String),
}

async fn http_reload(shared: &Shared, base: &reqwest::Url) -> Result<(), Reload> {
    let url = base
        .join("/api/admin/reload")
        .map_err(|e| Reload::Refused(e.to_string()))?;
    let mut request = shared
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}");
    if let Some(key) = &shared.options.admin_key {
        request = request.bearer_auth(key);
    }
    let resp = request.send().await.map_err(|_| Reload::Unreachable)?;
    if resp.status().is_success() {
        Ok(())
    } else {
        let status = resp.status();
        Err(Reload::Refused(format!(
            "POST {base}api/admin/reload answered {status}: {}",
            resp.text().await.unwrap_or_default()
        )))
    }
}
