//! The TCP JSON-lines input: a non-blocking accept loop on one thread and
//! one thread per connection (at most `max_connections`).
//!
//! Every thread polls the shared shutdown flag: accept every 50 ms, reads
//! time out every 100 ms, so stopping is prompt.
//!
//! Idle connections cannot lock producers out: a connection silent for
//! `idle_timeout_s` is closed, and when `max_connections` are open a new
//! one is still accepted — the one silent the longest is closed to make
//! room, those that never sent a line first.

use std::cell::Cell;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchyard_plugin_api::{bump_and_log, join_until, worth_logging, Emitter, LogLevel};

use crate::config::Cidr;
use crate::engine::{Counters, Msg};
use crate::input::parse_line;

const ACCEPT_POLL: Duration = Duration::from_millis(50);
const READ_POLL: Duration = Duration::from_millis(100);

/// The bounds of the TCP input.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_line_bytes: usize,
    pub max_connections: usize,
    pub allow_from: Option<Vec<Cidr>>,
    pub idle_timeout: Duration,
}

impl Limits {
    fn allows(&self, peer: &SocketAddr) -> bool {
        self.allow_from
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(peer.ip())))
    }
}

/// What the threads of one TCP input share.
pub(crate) struct Shared<E> {
    pub emitter: E,
    pub tx: SyncSender<Msg>,
    pub counters: Arc<Counters>,
    pub shutdown: Arc<AtomicBool>,
}

/// How one connection is doing, shared by its thread and the accept loop.
#[derive(Debug)]
struct Activity {
    /// When the connection was accepted.
    since: Instant,
    /// Milliseconds after `since` of the last bytes received (0: none yet).
    last_ms: AtomicU64,
    /// Whether it ever sent a complete line.
    sent_line: AtomicBool,
    /// Set by the accept loop to close it and make room.
    evict: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            sent_line: AtomicBool::new(false),
            evict: AtomicBool::new(false),
        }
    }

    fn heard(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last_heard(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Eviction order: connections that never sent a line first, then the
    /// one silent the longest.
    fn eviction_key(&self) -> (bool, Instant) {
        (self.sent_line.load(Ordering::Relaxed), self.last_heard())
    }
}

/// An open connection as the accept loop sees it.
struct Open {
    thread: JoinHandle<()>,
    activity: Arc<Activity>,
}

/// The accept loop: runs until shutdown, then joins its connection threads
/// (each notices shutdown within [`READ_POLL`]) until `join_deadline`.
pub(crate) fn serve<E: Emitter>(listener: TcpListener, limits: Limits, shared: Arc<Shared<E>>) {
    let mut connections: Vec<Open> = Vec::new();
    let mut accept_errors = 0u64;
    while !shared.shutdown.load(Ordering::SeqCst) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // E.g. out of file descriptors: back off rather than spin.
                accept_errors += 1;
                if worth_logging(accept_errors) {
                    shared
                        .emitter
                        .log(LogLevel::Warn, &format!("detection: accept failed: {e}"));
                }
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        connections.retain(|c| !c.thread.is_finished());
        if !limits.allows(&peer) {
            drop(stream);
            let refused = &shared.counters.refused_connections;
            bump_and_log(&shared.emitter, refused, LogLevel::Warn, |n| {
                format!("detection: refused connection from {peer}: not in allow_from ({n} refused so far)")
            });
            continue;
        }
        make_room(&connections, limits.max_connections, &shared);
        let activity = Arc::new(Activity::new());
        let conn_shared = Arc::clone(&shared);
        let (max_line_bytes, idle_timeout) = (limits.max_line_bytes, limits.idle_timeout);
        let watched = Arc::clone(&activity);
        let spawned = shared
            .emitter
            .spawn(&format!("detection-conn-{peer}"), move || {
                let conn = Conn {
                    peer,
                    max_line_bytes,
                    idle_timeout,
                    activity: &watched,
                };
                connection(stream, &conn, &conn_shared)
            });
        match spawned {
            Ok(thread) => connections.push(Open { thread, activity }),
            Err(e) => shared.emitter.log(
                LogLevel::Warn,
                &format!("detection: cannot start a thread for {peer}: {e}"),
            ),
        }
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(1);
    for open in connections {
        join_until(open.thread, deadline);
    }
}

/// With `max` connections open (not counting those already told to go),
/// tells the one to evict first to close, so that a new one fits.
fn make_room<E: Emitter>(connections: &[Open], max: usize, shared: &Shared<E>) {
    let staying = || {
        connections
            .iter()
            .filter(|c| !c.activity.evict.load(Ordering::SeqCst))
    };
    if staying().count() < max {
        return;
    }
    if let Some(oldest) = staying().min_by_key(|c| c.activity.eviction_key()) {
        oldest.activity.evict.store(true, Ordering::SeqCst);
        let evicted = &shared.counters.evicted_connections;
        bump_and_log(&shared.emitter, evicted, LogLevel::Warn, |n| {
            format!(
                "detection: max_connections ({max}) reached: closed the connection silent the longest to make room ({n} so far)"
            )
        });
    }
}

/// One connection's identity and bounds.
struct Conn<'a> {
    peer: SocketAddr,
    max_line_bytes: usize,
    idle_timeout: Duration,
    activity: &'a Activity,
}

impl Conn<'_> {
    /// Why the connection must close now, if it must.
    fn must_close(&self) -> Option<&'static str> {
        if self.activity.evict.load(Ordering::SeqCst) {
            Some("evicted")
        } else if self.activity.last_heard().elapsed() >= self.idle_timeout {
            Some("idle")
        } else {
            None
        }
    }
}

/// Reads lines from one connection until EOF, an error, shutdown, eviction
/// or `idle_timeout` of silence.
fn connection<E: Emitter>(mut stream: TcpStream, conn: &Conn<'_>, shared: &Shared<E>) {
    let peer = conn.peer;
    // Accepted sockets inherit non-blocking mode on some platforms.
    if let Err(e) = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(READ_POLL)))
    {
        shared.emitter.log(
            LogLevel::Warn,
            &format!("detection: cannot set up the connection from {peer}: {e}"),
        );
        return;
    }
    let mut lines = LineSplitter::new(conn.max_line_bytes);
    let mut chunk = vec![0u8; 16 * 1024];
    let engine_gone = Cell::new(false);
    let mut on_line = |line: Line<'_>| {
        conn.activity.sent_line.store(true, Ordering::Relaxed);
        if !engine_gone.get() {
            engine_gone.set(!handle_line(line, peer, shared));
        }
    };
    while !shared.shutdown.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => {
                lines.finish(&mut on_line);
                return;
            }
            Ok(n) => {
                conn.activity.heard();
                lines.feed(&chunk[..n], &mut on_line);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
        if engine_gone.get() {
            return;
        }
        if let Some(why) = conn.must_close() {
            if why == "idle" {
                let idle = &shared.counters.idle_connections_closed;
                bump_and_log(&shared.emitter, idle, LogLevel::Info, |n| {
                    format!(
                        "detection: closed the connection from {peer}: silent for idle_timeout_s ({} s; {n} closed so far)",
                        conn.idle_timeout.as_secs_f64()
                    )
                });
            }
            return;
        }
    }
}

/// Handles one line; false when the engine is gone.
fn handle_line<E: Emitter>(line: Line<'_>, peer: SocketAddr, shared: &Shared<E>) -> bool {
    match line {
        Line::Complete(bytes) => match parse_line(bytes) {
            Ok(input) => shared.tx.send(Msg::Input(input)).is_ok(),
            Err(why) => {
                let bad = &shared.counters.bad_lines;
                bump_and_log(&shared.emitter, bad, LogLevel::Warn, |n| {
                    format!("detection: bad line from {peer}: {why} ({n} bad lines so far)")
                });
                true
            }
        },
        Line::Oversized => {
            let oversized = &shared.counters.oversized_lines;
            bump_and_log(&shared.emitter, oversized, LogLevel::Warn, |n| {
                format!(
                    "detection: skipped a line over max_line_bytes from {peer} ({n} skipped so far)"
                )
            });
            true
        }
    }
}

/// What [`LineSplitter`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// A line within the bound, without its `\n` (or `\r\n`); never blank.
    Complete(&'a [u8]),
    /// A line over the bound: it was skipped up to its newline.
    Oversized,
}

/// Splits a byte stream into lines of at most `max` bytes, never holding
/// more than `max` bytes: a longer line is dropped as soon as it is over
/// the bound and the rest of it is skipped.
pub(crate) struct LineSplitter {
    max: usize,
    buf: Vec<u8>,
    skipping: bool,
}

impl LineSplitter {
    /// A splitter for lines of at most `max` bytes.
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            max,
            buf: Vec::new(),
            skipping: false,
        }
    }

    /// Feeds received bytes, calling `on_line` for each line they end.
    pub fn feed(&mut self, mut data: &[u8], on_line: &mut impl FnMut(Line<'_>)) {
        while !data.is_empty() {
            let newline = data.iter().position(|b| *b == b'\n');
            let (part, rest, ends) = match newline {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            // One byte of slack for the `\r` of a `\r\n` ending.
            if !self.skipping {
                if self.buf.len() + part.len() > self.max + 1 {
                    self.buf.clear();
                    self.skipping = true;
                    on_line(Line::Oversized);
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            if ends {
                if !self.skipping {
                    self.complete(on_line);
                }
                self.buf.clear();
                self.skipping = false;
            }
        }
    }

    /// The stream ended: a last line without a newline still counts.
    pub fn finish(&mut self, on_line: &mut impl FnMut(Line<'_>)) {
        if !self.skipping {
            self.complete(on_line);
        }
        self.buf.clear();
        self.skipping = false;
    }

    fn complete(&self, on_line: &mut impl FnMut(Line<'_>)) {
        let line = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
        if line.len() > self.max {
            on_line(Line::Oversized);
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            on_line(Line::Complete(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Got {
        L(String),
        Over,
    }

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Got> {
        let mut s = LineSplitter::new(max);
        let mut got = Vec::new();
        let mut on = |l: Line<'_>| {
            got.push(match l {
                Line::Complete(b) => Got::L(String::from_utf8(b.to_vec()).unwrap()),
                Line::Oversized => Got::Over,
            })
        };
        for c in chunks {
            s.feed(c, &mut on);
        }
        s.finish(&mut on);
        got
    }

    fn l(s: &str) -> Got {
        Got::L(s.to_owned())
    }

    #[test]
    fn splits_lines_across_chunks() {
        assert_eq!(
            split(10, &[b"ab", b"c\nde\r\n\n  \nf"]),
            vec![l("abc"), l("de"), l("f")]
        );
    }

    #[test]
    fn oversized_lines_are_skipped_to_the_newline() {
        assert_eq!(
            split(4, &[b"1234\n12345\nok\n"]),
            vec![l("1234"), Got::Over, l("ok")]
        );
        // Over the bound in a later chunk; the rest arrives in pieces.
        assert_eq!(
            split(4, &[b"12", b"345", b"6789", b"0\nnext\n"]),
            vec![Got::Over, l("next")]
        );
        // `\r\n` endings don't count the `\r`, even when split across chunks.
        assert_eq!(split(4, &[b"1234\r\n"]), vec![l("1234")]);
        assert_eq!(split(4, &[b"1234\r", b"\n"]), vec![l("1234")]);
        assert_eq!(split(4, &[b"1234x\nok"]), vec![Got::Over, l("ok")]);
        assert_eq!(split(4, &[b"1234\r\r\n"]), vec![Got::Over]);
        // An oversized unterminated last line is dropped too.
        assert_eq!(split(2, &[b"ok\n123"]), vec![l("ok"), Got::Over]);
    }
}
