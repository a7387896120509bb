//! Server figures read from /proc: CPU time (utime + stime, all threads) and
//! resident set size.

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
pub const TICKS_PER_S: f64 = 100.0;

fn user_system_of(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

fn ticks_of(stat: &str) -> Option<u64> {
    user_system_of(stat).map(|(u, s)| u + s)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// stime of a process, in clock ticks: its CPU time in the kernel (for a
/// server at steady state, nearly all of it in `send()`).
pub fn system_ticks(pid: u32) -> Option<u64> {
    user_system_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|(_, s)| s)
}

/// utime + stime of this process, in clock ticks.
pub fn self_cpu_ticks() -> Option<u64> {
    ticks_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// The calling thread's id (the TID that names it under /proc/PID/task/).
pub fn current_tid() -> Option<u32> {
    // /proc/thread-self is a link to PID/task/TID.
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// utime and stime of one thread, in clock ticks, kept apart because the
/// kernel's share (socket writes) is what a fan-out floor is made of.
pub fn thread_user_system_ticks(pid: u32, tid: u32) -> Option<(u64, u64)> {
    user_system_of(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?)
}

/// Time one thread has spent on a CPU, in ns (first field of
/// /proc/PID/task/TID/schedstat): the tick counters of `stat` move in 10 ms
/// steps, too coarse for one round of a few writes.
pub fn thread_run_ns(pid: u32, tid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Time the calling thread has spent on a CPU, in ns, up to now.
///
/// The kernel brings a thread's run time up to date only when it schedules
/// (or at a timer tick), so a running thread reading its own schedstat sees
/// a figure up to a tick old: yielding first makes it current. The yield and
/// the read cost a few µs, which a caller timing short spans should
/// subtract (see `floor`).
pub fn own_thread_run_ns() -> Option<u64> {
    std::thread::yield_now();
    let tid = current_tid()?;
    thread_run_ns(std::process::id(), tid)
}

/// Time io_uring's worker threads of process `pid` (`iou-wrk-*`, and
/// `iou-sqp-*` with SQPOLL) have spent on a CPU, in ns, added up; 0 when it
/// has none. They run the sends that could not go at once, on the
/// process's behalf but not on the thread that submitted them.
pub fn io_workers_run_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let comm =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        if comm.starts_with("iou-") {
            // A worker that has just exited cannot be read: it counts 0.
            total += thread_run_ns(pid, tid).unwrap_or(0);
        }
    }
    Some(total)
}

/// The soft limit on open files of this process (`ulimit -n`), from
/// /proc/self/limits; `None` when unlimited or unreadable.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy time of the whole machine (every core: user, nice, system, irq,
/// softirq, steal), in clock ticks, from the first line of /proc/stat.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?)
}

/// Busy and softirq time of one core, in clock ticks, from its `cpuN` line
/// of /proc/stat. On loopback the receiving socket's TCP processing runs as
/// softirq on the sending core, and is charged to no thread: only the
/// core's counters show the whole cost of a send.
pub fn core_busy_softirq_ticks(cpu: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let prefix = format!("cpu{cpu} ");
    let line = stat.lines().find_map(|l| l.strip_prefix(&prefix))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    Some((busy, *f.get(6)?))
}

/// `read` of every process in `pids`, added up; `None` when there is none
/// or one cannot be read.
pub fn summed(pids: &[u32], read: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| read(*pid)).sum()
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let stat = "42 (my server) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(ticks_of(stat), Some(325));
    }

    #[test]
    fn own_figures_are_readable() {
        assert!(self_cpu_ticks().is_some());
        assert!(machine_busy_ticks().is_some());
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let (pid, tid) = (std::process::id(), current_tid().unwrap());
        assert!(thread_user_system_ticks(pid, tid).is_some());
        assert!(thread_run_ns(pid, tid).is_some());
        // Spinning shows up in the thread's own run time, read at once (not
        // a 10 ms tick later). Bounded by CPU time spent, not wall time: on
        // a loaded machine the thread may wait for a core meanwhile.
        let ran = own_thread_run_ns().unwrap();
        let began = std::time::Instant::now();
        while own_thread_run_ns().unwrap() - ran < 2_000_000 {
            assert!(
                began.elapsed() < std::time::Duration::from_secs(10),
                "run time never grew by 2 ms"
            );
        }
        assert!(open_files_limit().unwrap() > 0);
        let (busy, softirq) = core_busy_softirq_ticks(0).unwrap();
        assert!(busy >= softirq);
    }
}

/// The slab caches a TCP connection's kernel objects come from: the socket,
/// its inode, file and dentry, and (on the server) its epoll entry.
const SOCKET_SLABS: [&str; 5] = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi"];

/// Kernel memory the machine holds for sockets now, in KiB: the active
/// objects of [`SOCKET_SLABS`] (from /proc/slabinfo, readable by root only)
/// plus TCP's buffer pages (`mem` in /proc/net/sockstat). RSS shows none of
/// it; `None` when either file cannot be read.
pub fn socket_kernel_kib() -> Option<f64> {
    let slabs = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    Some(slab_bytes(&slabs, &SOCKET_SLABS) / 1024.0 + tcp_buffer_pages(&sockstat)? as f64 * 4.0)
}

/// Active objects × object size summed over the named caches of a
/// /proc/slabinfo text.
fn slab_bytes(slabinfo: &str, names: &[&str]) -> f64 {
    slabinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            if !names.contains(&name) {
                return None;
            }
            let active: f64 = fields.next()?.parse().ok()?;
            let _total = fields.next()?;
            let size: f64 = fields.next()?.parse().ok()?;
            Some(active * size)
        })
        .sum()
}

/// The `mem` figure (pages) of the `TCP:` line of /proc/net/sockstat.
fn tcp_buffer_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace();
    fields.find(|f| *f == "mem")?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod socket_memory_tests {
    use super::*;

    #[test]
    fn socket_slabs_and_buffer_pages_are_read() {
        let slabinfo = "slabinfo - version: 2.1\n\
            # name <active_objs> <num_objs> <objsize> ...\n\
            TCP 74 156 2368 13 8 : tunables 0 0 0 : slabdata 12 12 0\n\
            filp 1506 1785 192 21 1 : tunables 0 0 0 : slabdata 85 85 0\n\
            kmalloc-64 999 999 64 64 1 : tunables 0 0 0 : slabdata 1 1 0\n";
        assert_eq!(
            slab_bytes(slabinfo, &SOCKET_SLABS),
            74.0 * 2368.0 + 1506.0 * 192.0
        );
        let sockstat =
            "sockets: used 180\nTCP: inuse 5 orphan 0 tw 3 alloc 7 mem 12\nUDP: inuse 1 mem 2\n";
        assert_eq!(tcp_buffer_pages(sockstat), Some(12));
    }
}
