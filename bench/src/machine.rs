//! What a results page says about the machine and the run: the clock, the CPU, the load, a
//! server's version line, a process's memory and CPU time (from `/proc`).

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The first line a command prints (stdout, else stderr), trimmed; empty if it cannot run.
pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// A file's text, trimmed; empty if it cannot be read.
pub fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// (YYYY-MM-DD HH:MM:SS, YYYYMMDD-HHMMSS) in UTC, from the system clock.
pub fn now_utc() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}"),
        format!("{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}"),
    )
}

/// The CPU model from `/proc/cpuinfo` (else the architecture).
pub fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// `linux 6.1.0-…`.
pub fn kernel() -> String {
    format!(
        "{} {}",
        std::env::consts::OS,
        read_trim("/proc/sys/kernel/osrelease")
    )
}

/// Total memory, e.g. `23.6 GiB`.
pub fn memory() -> String {
    read_trim("/proc/meminfo")
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default()
}

/// The command line of this run as the results file records it: `bench` and the arguments.
pub fn command(bench: &str) -> String {
    std::iter::once(bench.to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/proc/loadavg` as it reads.
pub fn loadavg() -> String {
    read_trim("/proc/loadavg")
}

/// The short commit of the tree the bench was built from.
pub fn tidings_commit() -> String {
    first_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    )
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
fn stat_cpu_ticks(text: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count fields after its
    // last closing parenthesis.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is f[0], so utime (14) is f[11] and stime (15) f[12].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// User + system CPU seconds a process has used so far (`/proc/<pid>/stat`, or `self`).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let ticks = stat_cpu_ticks(&std::fs::read_to_string(path).ok()?)?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_counted_after_the_command_name_whatever_it_holds() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 10 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(line), Some(12));
        assert_eq!(stat_cpu_ticks("42 (x) S 1"), None);
        assert_eq!(stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        let rss = proc_status_bytes(me, "VmRSS").expect("VmRSS");
        assert!(rss > 1 << 20, "rss {rss}");
        assert!(proc_status_bytes(me, "NoSuchField").is_none());
        // Burn a little CPU so the count cannot be zero by accident of timing.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 30 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let a = cpu_seconds(None).expect("self");
        let b = cpu_seconds(Some(me)).expect("by pid");
        assert!(a > 0.0 && b >= a, "{a} {b}");
        assert_eq!(cpu_seconds(Some(u32::MAX)), None, "a missing process");
        let (date, stamp) = now_utc();
        assert_eq!((date.len(), stamp.len()), (19, 15));
    }
}
