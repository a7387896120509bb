//! `switchyard-bench floor`: the kernel's floor for a fan-out on this machine.
//!
//! One writer thread writes a pre-built WebSocket text frame to each of N
//! loopback TCP connections in turn, as a router's fan-out of one event to N
//! subscribers must at the least, with nothing else around it: no framing,
//! queues, wake-ups or metrics. The time a round takes is the shortest
//! possible fan-out of one event to N subscribers on one core, so a lower
//! bound for the p99 latency of a broadcast at that N.
//!
//! Each send's return is timed too, from its round's start (`delivery_ms`):
//! on loopback a frame is in the subscriber's socket when its `send()`
//! returns, so these are the latencies a server with no cost of its own
//! would show at arrival. Their p99 is what a server's steady p99 at arrival
//! (`send_to_arrival`) stands beside, percentile for percentile; the round's
//! median (`fanout_ms`) is the stricter mark an earlier table used.
//!
//! The receiving ends live in a child process (`floor-reader`), which drains
//! them on one thread and tells the writer when a round has arrived whole.
//! A child, not a thread, because a process may hold at most 20,000 open
//! files here and 15,000 pairs take 30,000: split across two processes each
//! holds N.
//!
//! `--submit io-uring` writes each round through io_uring instead: all N
//! sends of a round go into the submission queue and one
//! `io_uring_enter` submits them and waits for their N completions (in
//! chunks of `--uring-entries` when the queue is smaller than N). It
//! measures what batching the syscalls themselves saves, against what each
//! send's TCP work costs whichever way it is submitted.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use io_uring::{opcode, types, IoUring};
use serde_json::{json, Value};

use crate::proc_stats;

/// How a round's writes reach the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Submit {
    /// One blocking `write()` per connection: N syscalls a round.
    Send,
    /// One io_uring `Send` per connection, all of a round submitted and
    /// waited for with one `io_uring_enter` (one per chunk when
    /// `--uring-entries` < N).
    IoUring,
}

impl Submit {
    fn name(self) -> &'static str {
        match self {
            Submit::Send => "send",
            Submit::IoUring => "io-uring",
        }
    }
}

/// What one floor measurement does.
#[derive(Args, Clone)]
pub struct FloorArgs {
    /// Connection pairs (N): the subscribers of one broadcast.
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: usize,
    /// Timed rounds; each writes one buffer to every connection.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Untimed rounds first, so that socket buffers and caches are warm.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Bytes of the frame's text (the envelope; `run` reports it as
    /// `frame_bytes`). The WebSocket header (2–10 bytes) comes on top.
    #[arg(long, default_value_t = 162)]
    frame_bytes: usize,
    /// Frames per write (K): K > 1 is the batching of K queued events into
    /// one `send()`, from one pre-concatenated buffer.
    #[arg(long, default_value_t = 1)]
    per_send: usize,
    /// Pause after a round has been received whole, before the next one, so
    /// that each round starts with an idle reader, as a steady-rate event does
    /// (20 ms = 50 events/s).
    #[arg(long, default_value_t = 20)]
    gap_ms: u64,
    /// How each round's writes are submitted.
    #[arg(long, value_enum, default_value_t = Submit::Send)]
    submit: Submit,
    /// With `--submit io-uring`: submission queue entries (the kernel
    /// rounds up to a power of two, at most 32,768). Unset, N (capped), so
    /// that a round is one submission; smaller, a round goes in chunks of
    /// this many, each submitted and waited for in turn.
    #[arg(long)]
    uring_entries: Option<u32>,
    /// Pin the writer thread to this core (with `taskset -p`; util-linux).
    #[arg(long)]
    cpu: Option<usize>,
    /// Pin the reader process to this core (it is started under `taskset -c`).
    /// Unset, it inherits the affinity this process was started with.
    #[arg(long)]
    reader_cpu: Option<usize>,
    /// Write the JSON report here (it is always printed to stdout too).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also print the figures as a Markdown table row on stderr.
    #[arg(long)]
    pub markdown: bool,
}

/// The receiving side, run as a child process of `floor`.
#[derive(Args, Clone)]
pub struct ReaderArgs {
    /// The writer's listener.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(short = 'n', long)]
    connections: usize,
    /// Bytes a round brings over all connections together.
    #[arg(long)]
    round_bytes: u64,
}

/// An unmasked (server → client) WebSocket text frame carrying `payload`.
pub fn ws_text_frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = Vec::with_capacity(len + 10);
    frame.push(0x81); // FIN + text
    if len <= 125 {
        frame.push(len as u8);
    } else if len <= 0xFFFF {
        frame.push(126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame
}

/// A JSON text of exactly `bytes` bytes (at least the bare envelope), so the
/// frame looks like what a router sends, not like zeros.
fn envelope(bytes: usize) -> Vec<u8> {
    let head = r#"{"type":"bench.tick","channel":"bench","sequence":1,"payload":{"pad":""#;
    let tail = r#""}}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

/// Median, 99th percentile and maximum (nearest rank); null when there is
/// nothing to rank.
fn tail(values: &mut [f64]) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let at = (values.len() as f64 * q).ceil() as usize;
        round3(values[at.clamp(1, values.len()) - 1])
    };
    json!({"p50": rank(0.5), "p99": rank(0.99), "max": rank(1.0)})
}

/// Median, minimum and maximum.
fn spread(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "p50": values.get(values.len() / 2).copied().map(round),
        "min": values.first().copied().map(round),
        "max": values.last().copied().map(round),
    })
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Seconds of CPU kept to the µs: a small run uses well under a millisecond.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The reader process; killed if still there when dropped (an error in the
/// writer must not leave it behind).
struct ReaderChild(Child);

impl Drop for ReaderChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The largest submission queue io_uring_setup takes (IORING_MAX_ENTRIES).
const URING_MAX_ENTRIES: u32 = 32_768;

/// How long one round's sends may take to complete through io_uring.
const URING_WAIT_S: u64 = 60;

/// ETIME, which `io_uring_enter` returns when a bounded wait runs out (62 on
/// Linux); the one errno the bench needs, not worth the libc crate.
const ETIME: i32 = 62;

/// A ring that writes one round: every connection's send queued, then
/// submitted and waited for together.
struct Uring {
    ring: IoUring,
    /// Sends per submission: the submission queue's size, or N if smaller.
    chunk: usize,
}

impl Uring {
    /// Sets up a ring of `entries` submission slots. A refusal (seccomp, or
    /// the `kernel.io_uring_disabled` sysctl) is an error that says which,
    /// since it is itself the finding on a machine that refuses.
    fn new(entries: u32, n: usize) -> Result<Self> {
        let ring = IoUring::builder()
            // One thread submits and reaps: the kernel may skip the locking
            // and the task-work interrupts made for several.
            .setup_single_issuer()
            .setup_defer_taskrun()
            // Keep submitting past a send that fails at once, so that a
            // round stays one syscall and the failure shows in its CQE.
            .setup_submit_all()
            .build(entries)
            .map_err(|e| {
                let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                    .map_or_else(|_| "unreadable".to_string(), |v| v.trim().to_string());
                anyhow::anyhow!(
                    "io_uring_setup({entries}) was refused: {e} (raw OS error {:?}); \
                     kernel.io_uring_disabled = {sysctl}",
                    e.raw_os_error()
                )
            })?;
        let chunk = (ring.params().sq_entries() as usize).min(n);
        Ok(Self { ring, chunk })
    }

    /// Sends `buf` to every one of `fds`, `chunk` at a time: queue the
    /// chunk, one `io_uring_enter` to submit it and wait for all of its
    /// completions, check each. Returns the number of submissions.
    fn round(&mut self, fds: &[types::Fd], buf: &'static [u8]) -> Result<usize> {
        let len = u32::try_from(buf.len()).context("a send larger than 4 GiB")?;
        let mut submissions = 0;
        for (c, chunk) in fds.chunks(self.chunk).enumerate() {
            let first = c * self.chunk;
            {
                let mut sq = self.ring.submission();
                for (i, fd) in chunk.iter().enumerate() {
                    let sqe = opcode::Send::new(*fd, buf.as_ptr(), len)
                        .build()
                        .user_data((first + i) as u64);
                    // SAFETY: the kernel reads `buf` until the send
                    // completes, and `buf` is 'static (leaked once per run),
                    // so it outlives the operation whatever happens to this
                    // round, an early error included. The fd is looked up
                    // when the SQE is submitted, and its socket is held
                    // open by the connection in `conns` until the run ends.
                    unsafe { sq.push(&sqe) }.map_err(|_| {
                        anyhow::anyhow!("the submission queue is full ({} sends)", self.chunk)
                    })?;
                }
            }
            let mut done = 0;
            let mut completed = vec![false; chunk.len()];
            // A bounded wait: a send that never completes must fail the run
            // and say which connections, not hang it.
            let timeout = types::Timespec::new().sec(URING_WAIT_S);
            let wait = types::SubmitArgs::new().timespec(&timeout);
            while done < chunk.len() {
                match self
                    .ring
                    .submitter()
                    .submit_with_args(chunk.len() - done, &wait)
                {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(ETIME) => {
                        let missing: Vec<usize> = (0..chunk.len())
                            .filter(|i| !completed[*i])
                            .map(|i| first + i)
                            .take(10)
                            .collect();
                        bail!(
                            "io_uring: {} of {} sends not completed after {URING_WAIT_S} s \
                             (connections {missing:?}…)",
                            chunk.len() - done,
                            chunk.len()
                        );
                    }
                    Err(e) => return Err(e).context("io_uring_enter (submit and wait)"),
                }
                submissions += 1;
                for cqe in self.ring.completion() {
                    let res = cqe.result();
                    let conn = cqe.user_data();
                    if let Some(slot) = (conn as usize)
                        .checked_sub(first)
                        .and_then(|i| completed.get_mut(i))
                    {
                        ensure!(!*slot, "io_uring: two completions for connection {conn}");
                        *slot = true;
                    }
                    ensure!(
                        res >= 0,
                        "io_uring send to connection {conn} failed: {}",
                        std::io::Error::from_raw_os_error(-res)
                    );
                    // A short write would leave a partial frame on the
                    // wire: a broken measurement, never to be passed over.
                    ensure!(
                        res as u32 == len,
                        "io_uring send to connection {conn} was short: {res} of {len} bytes"
                    );
                    done += 1;
                }
            }
            ensure!(
                done == chunk.len(),
                "{done} completions for {} sends",
                chunk.len()
            );
        }
        Ok(submissions)
    }
}

/// Pins the calling thread to `cpu`. taskset rather than a direct
/// `sched_setaffinity`, which would need `unsafe` or a crate for one call.
fn pin_current_thread(cpu: usize) -> Result<()> {
    let tid = proc_stats::current_tid().context("read /proc/thread-self")?;
    let out = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
        .output()
        .context("--cpu needs taskset (util-linux)")?;
    ensure!(
        out.status.success(),
        "taskset -p -c {cpu} {tid} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Runs the measurement and returns its JSON report.
pub fn floor(args: &FloorArgs) -> Result<Value> {
    let n = args.connections;
    ensure!(n >= 1, "-n must be at least 1");
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.per_send >= 1, "--per-send must be at least 1");
    ensure!(
        args.uring_entries.is_none() || args.submit == Submit::IoUring,
        "--uring-entries is for --submit io-uring"
    );
    ensure!(
        args.uring_entries
            .is_none_or(|e| (1..=URING_MAX_ENTRIES).contains(&e)),
        "--uring-entries must be 1 to {URING_MAX_ENTRIES}"
    );
    // Before any connection: a machine that refuses io_uring says so at once.
    let mut uring = match args.submit {
        Submit::Send => None,
        Submit::IoUring => {
            let entries = args.uring_entries.unwrap_or_else(|| {
                u32::try_from(n).map_or(URING_MAX_ENTRIES, |n| n.min(URING_MAX_ENTRIES))
            });
            Some(Uring::new(entries, n)?)
        }
    };
    // Each side holds N sockets, plus a few files of its own.
    if let Some(limit) = proc_stats::open_files_limit() {
        ensure!(
            n as u64 + 32 <= limit,
            "-n {n} needs {} open files in each of the two processes; the limit is {limit} \
             (ulimit -n)",
            n + 32
        );
    }

    // Every reader connection takes a local port of its own.
    if let Some((low, high)) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            let mut it = r.split_whitespace().map(|x| x.parse::<usize>().ok());
            Some((it.next()??, it.next()??))
        })
    {
        ensure!(
            n <= high.saturating_sub(low) + 1,
            "-n {n} is more than the {} local ports of ip_local_port_range",
            high.saturating_sub(low) + 1
        );
    }

    let frame = ws_text_frame(&envelope(args.frame_bytes));
    let wire_bytes = frame.len();
    // Leaked, so that it is 'static: an io_uring send reads it until its
    // completion, which must hold even if a round fails half-way.
    let buf: &'static [u8] = Box::leak(frame.repeat(args.per_send).into_boxed_slice());
    let total_rounds = args.warmup + args.rounds;

    let listener = TcpListener::bind("127.0.0.1:0").context("bind the listener")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe().context("find this executable")?;
    let mut cmd = match args.reader_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.arg("floor-reader")
        .arg("--addr")
        .arg(addr.to_string())
        .arg("-n")
        .arg(n.to_string())
        .arg("--round-bytes")
        .arg((buf.len() * n).to_string())
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = ReaderChild(cmd.spawn().context("start the reader process")?);
    let reader_pid = child.0.id();
    let (lines_tx, lines) = mpsc::channel();
    let out = child.0.stdout.take().context("reader stdout")?;
    // A thread hands the reader's lines over, so that the writer can wait
    // for them with a timeout rather than hang if the reader is stuck.
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |what: &str| -> Result<String> {
        lines
            .recv_timeout(Duration::from_secs(60))
            .with_context(|| format!("the reader process did not report {what}"))
    };

    // Accept the reader's N connections.
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
    while conns.len() < n {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                conns.push(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.0.try_wait()? {
                    bail!(
                        "the reader process ended ({status}) after {} connections",
                        conns.len()
                    );
                }
                ensure!(
                    Instant::now() < deadline,
                    "only {} of {n} connections in 120 s",
                    conns.len()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
    let fds: Vec<types::Fd> = conns.iter().map(|c| types::Fd(c.as_raw_fd())).collect();
    let ready = next_line("that it is connected")?;
    let reader_tid: u32 = ready
        .strip_prefix("ready ")
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("unexpected line from the reader: {ready}"))?;

    if let Some(cpu) = args.cpu {
        pin_current_thread(cpu)?;
    }
    let pid = std::process::id();
    let tid = proc_stats::current_tid().context("read /proc/thread-self")?;
    // What taking the writer's CPU time itself costs, taken off each round.
    let mut overhead: Vec<f64> = (0..9)
        .filter_map(|_| {
            let a = proc_stats::own_thread_run_ns()?;
            let b = proc_stats::own_thread_run_ns()?;
            Some(b.saturating_sub(a) as f64)
        })
        .collect();
    let overhead_ns = median(&mut overhead).unwrap_or(0.0);

    let mut fanout_ms = Vec::with_capacity(args.rounds);
    let mut delivered_ms = Vec::with_capacity(args.rounds);
    let mut writer_cpu_us = Vec::with_capacity(args.rounds);
    // Through io_uring a round's sends complete together, in one
    // `io_uring_enter`: there is no time of each send's own to take.
    let mut delivery_ms = Vec::with_capacity(match args.submit {
        Submit::Send => n * args.rounds,
        Submit::IoUring => 0,
    });
    let mut submissions = 0usize;
    let mut start = None;
    for round in 0..total_rounds {
        if round == args.warmup {
            start = Some((
                proc_stats::thread_user_system_ticks(pid, tid),
                proc_stats::thread_run_ns(reader_pid, reader_tid),
                proc_stats::cpu_ticks(reader_pid),
                proc_stats::self_cpu_ticks(),
                proc_stats::machine_busy_ticks(),
                args.cpu.and_then(proc_stats::core_busy_softirq_ticks),
                proc_stats::io_workers_run_ns(pid),
            ));
            submissions = 0;
        }
        let timed = round >= args.warmup;
        let cpu0 = proc_stats::own_thread_run_ns();
        let t0 = Instant::now();
        match uring.as_mut() {
            None => {
                for c in &mut conns {
                    c.write_all(buf).context("write to a connection")?;
                    if timed {
                        delivery_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                }
                submissions += n;
            }
            Some(u) => submissions += u.round(&fds, buf)?,
        }
        let wrote = t0.elapsed();
        let cpu1 = proc_stats::own_thread_run_ns();
        let line = next_line(&format!("round {}", round + 1))?;
        let received = t0.elapsed();
        ensure!(
            line == format!("round {}", round + 1),
            "unexpected line from the reader: {line}"
        );
        if timed {
            fanout_ms.push(wrote.as_secs_f64() * 1e3);
            delivered_ms.push(received.as_secs_f64() * 1e3);
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                writer_cpu_us.push((b.saturating_sub(a) as f64 - overhead_ns).max(0.0) / 1e3);
            }
        }
        std::thread::sleep(Duration::from_millis(args.gap_ms));
    }
    let (us0, reader_ns0, reader_ticks0, self0, machine0, core0, workers0) =
        start.expect("at least one round");
    let workers1 = proc_stats::io_workers_run_ns(pid);
    let core1 = args.cpu.and_then(proc_stats::core_busy_softirq_ticks);
    let us1 = proc_stats::thread_user_system_ticks(pid, tid);
    let reader_ns1 = proc_stats::thread_run_ns(reader_pid, reader_tid);
    let reader_ticks1 = proc_stats::cpu_ticks(reader_pid);
    let self1 = proc_stats::self_cpu_ticks();
    let machine1 = proc_stats::machine_busy_ticks();
    let uring_chunk = uring.as_ref().map(|u| u.chunk);
    drop(fds);
    drop(uring);
    drop(conns);
    let _ = child.0.wait();

    let sends = (n * args.rounds) as f64;
    let ticks_s = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / proc_stats::TICKS_PER_S),
        _ => None,
    };
    let writer_user_s = ticks_s(us0.map(|x| x.0), us1.map(|x| x.0));
    let writer_system_s = ticks_s(us0.map(|x| x.1), us1.map(|x| x.1));
    let writer_cpu_s = writer_cpu_us.iter().sum::<f64>() / 1e6;
    // io_uring's own kernel threads (iou-wrk-*), which take a send that
    // cannot go at once: their CPU is part of the writer's cost.
    let io_workers_cpu_s = match (workers0, workers1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let reader_cpu_s = match (reader_ns0, reader_ns1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let other_cpu_s = match (
        ticks_s(machine0, machine1),
        ticks_s(self0, self1),
        ticks_s(reader_ticks0, reader_ticks1),
    ) {
        (Some(m), Some(s), Some(r)) => Some(round3((m - s - r).max(0.0))),
        _ => None,
    };
    // Meaningful only when the writer's core has nothing else to do: its
    // counters take everything that ran there, the gaps' idle time excepted.
    let writer_core = match (args.cpu, core0, core1) {
        (Some(cpu), Some(a), Some(b)) => {
            let busy = ticks_s(Some(a.0), Some(b.0)).unwrap_or(0.0);
            let softirq = ticks_s(Some(a.1), Some(b.1)).unwrap_or(0.0);
            json!({
                "cpu": cpu,
                "busy_s": round3(busy),
                "softirq_s": round3(softirq),
                "busy_us_per_send": round3(busy * 1e6 / (n * args.rounds) as f64),
            })
        }
        _ => Value::Null,
    };
    let mut per_send_wall: Vec<f64> = fanout_ms.iter().map(|ms| ms * 1e3 / n as f64).collect();
    let mut per_send_cpu: Vec<f64> = writer_cpu_us.iter().map(|us| us / n as f64).collect();
    let k = args.per_send as f64;
    let (wall, cpu) = (median(&mut per_send_wall), median(&mut per_send_cpu));

    Ok(json!({
        "kind": "floor",
        "connections": n,
        "frame_bytes": args.frame_bytes,
        "wire_bytes": wire_bytes,
        "per_send": args.per_send,
        "send_bytes": buf.len(),
        "submit": args.submit.name(),
        "uring_chunk": uring_chunk,
        "syscalls_per_round": round3(submissions as f64 / args.rounds as f64),
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "gap_ms": args.gap_ms,
        "writer_cpu": args.cpu,
        "reader_cpu": args.reader_cpu,
        "per_send_us": {
            "wall": wall.map(round3),
            "cpu": cpu.map(round3),
        },
        "per_frame_us": {
            "wall": wall.map(|x| round3(x / k)),
            "cpu": cpu.map(|x| round3(x / k)),
        },
        "fanout_ms": spread(&mut fanout_ms),
        "delivered_ms": spread(&mut delivered_ms),
        "delivery_ms": tail(&mut delivery_ms),
        "writer_cpu_s": {
            "total": round6(writer_cpu_s),
            "user": writer_user_s,
            "system": writer_system_s,
        },
        "writer_cpu_us_per_send": (sends > 0.0).then(|| round3(writer_cpu_s * 1e6 / sends)),
        "writer_core": writer_core,
        "io_workers_cpu_s": io_workers_cpu_s.map(round6),
        "reader_cpu_s": reader_cpu_s.map(round6),
        "reader_cpu_us_per_frame": reader_cpu_s.map(|s| round3(s * 1e6 / (sends * k))),
        "other_cpu_s": other_cpu_s,
    }))
}

/// The Markdown header and row for a floor report.
pub fn markdown(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("–".into(), |x| format!("{x:.2}"));
    format!(
        "| N | frame bytes | K | submit | syscalls/round | per-send µs (wall) | per-send µs (writer CPU) | fan-out ms p50 | fan-out ms max | received ms p50 | received ms max \
         | send return ms p50 | send return ms p99 | reader CPU µs/frame | other CPU s |\n\
         | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
         | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        r["connections"],
        r["frame_bytes"],
        r["per_send"],
        r["submit"].as_str().unwrap_or("send"),
        f(&r["syscalls_per_round"]),
        f(&r["per_send_us"]["wall"]),
        f(&r["per_send_us"]["cpu"]),
        f(&r["fanout_ms"]["p50"]),
        f(&r["fanout_ms"]["max"]),
        f(&r["delivered_ms"]["p50"]),
        f(&r["delivered_ms"]["max"]),
        f(&r["delivery_ms"]["p50"]),
        f(&r["delivery_ms"]["p99"]),
        f(&r["reader_cpu_us_per_frame"]),
        f(&r["other_cpu_s"]),
    )
}

/// The reader process: connects N times, then drains every connection on
/// one thread, printing `round K` each time K rounds' bytes have arrived.
pub fn reader(args: &ReaderArgs) -> Result<()> {
    ensure!(args.round_bytes > 0, "--round-bytes must be positive");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let mut streams = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            let s = tokio::net::TcpStream::connect(args.addr)
                .await
                .context("connect to the writer")?;
            s.set_nodelay(true)?;
            streams.push(s);
        }
        let tid = proc_stats::current_tid().context("read /proc/thread-self")?;
        println!("ready {tid}");
        std::io::stdout().flush()?;
        let total = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for s in streams {
            tasks.spawn(drain(s, total.clone(), args.round_bytes));
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    })
}

thread_local! {
    /// One read buffer for every connection: the tasks share the one thread,
    /// and a buffer each would take 64 KiB × N.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

/// Reads one connection until the writer closes it.
async fn drain(s: tokio::net::TcpStream, total: Arc<AtomicU64>, round_bytes: u64) -> Result<()> {
    loop {
        s.readable().await?;
        let read = READ_BUF.with(|b| s.try_read(&mut b.borrow_mut()));
        let got = match read {
            Ok(0) => return Ok(()),
            Ok(got) => got as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        let before = total.fetch_add(got, Ordering::Relaxed);
        for round in before / round_bytes..(before + got) / round_bytes {
            println!("round {}", round + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_right_header() {
        let f = ws_text_frame(&envelope(162));
        assert_eq!(f.len(), 166);
        assert_eq!(&f[..4], &[0x81, 126, 0, 162]);
        assert_eq!(ws_text_frame(b"hi"), vec![0x81, 2, b'h', b'i']);
        assert_eq!(ws_text_frame(&[b'x'; 70_000]).len(), 70_010);
    }

    #[test]
    fn the_tail_ranks_the_nearest_value() {
        let mut v: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(
            tail(&mut v),
            json!({"p50": 100.0, "p99": 198.0, "max": 200.0})
        );
        assert_eq!(
            tail(&mut [7.0]),
            json!({"p50": 7.0, "p99": 7.0, "max": 7.0})
        );
        assert_eq!(tail(&mut []), Value::Null);
    }

    #[test]
    fn envelopes_are_json_of_the_asked_size() {
        for size in [100, 162, 1000] {
            let e = envelope(size);
            assert_eq!(e.len(), size);
            serde_json::from_slice::<Value>(&e).unwrap();
        }
    }
}
