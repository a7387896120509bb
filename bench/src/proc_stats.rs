//! Server figures read from /proc: CPU time (utime + stime, all threads) and
//! resident set size.

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
pub const TICKS_PER_S: f64 = 100.0;

fn ticks_of(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime of this process, in clock ticks.
pub fn self_cpu_ticks() -> Option<u64> {
    ticks_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
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
    }
}
