//! The CPU and memory this process may use, so alert rules can compare usage
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`) with the
//! limit instead of a number written into the rule.
//!
//! A container's limits are its cgroup v2 `cpu.max` and `memory.max`; a
//! limit may sit on any ancestor cgroup, so the tightest along the path
//! counts. Without one, the machine's: available parallelism and `MemTotal`.

use std::path::{Path, PathBuf};

/// The limits found at start-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpu_cores: f64,
    /// 0 when nothing could be read (not Linux).
    pub memory_bytes: u64,
}

/// Reads the limits from `/proc` and `/sys/fs/cgroup`.
pub fn detect() -> Limits {
    let cgroups = cgroup_dirs(Path::new("/sys/fs/cgroup"), &read("/proc/self/cgroup").unwrap_or_default());
    let tightest = |file: &str, parse: fn(&str) -> Option<f64>| {
        cgroups.iter().filter_map(|dir| read(dir.join(file)).and_then(|v| parse(&v))).reduce(f64::min)
    };
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu_cores = tightest("cpu.max", cpu_max_cores).unwrap_or(parallelism);
    let mem_total = read("/proc/meminfo").and_then(|m| mem_total_bytes(&m));
    let cgroup_memory = tightest("memory.max", |v| memory_max_bytes(v).map(|b| b as f64)).map(|b| b as u64);
    // A cgroup limit above the machine's memory is no limit at all.
    let memory_bytes = match (cgroup_memory, mem_total) {
        (Some(limit), Some(total)) => limit.min(total),
        (limit, total) => limit.or(total).unwrap_or(0),
    };
    Limits { cpu_cores, memory_bytes }
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The cgroup v2 directories of this process, from its own up to the root,
/// given the `/proc/self/cgroup` text (`0::/path` is the v2 line).
pub fn cgroup_dirs(root: &Path, proc_self_cgroup: &str) -> Vec<PathBuf> {
    let Some(own) = proc_self_cgroup.lines().find_map(|l| l.strip_prefix("0::")) else { return Vec::new() };
    let mut dirs = Vec::new();
    let mut path = Some(Path::new(own.trim()));
    while let Some(p) = path {
        let relative = p.strip_prefix("/").unwrap_or(p);
        dirs.push(root.join(relative));
        path = p.parent();
    }
    dirs
}

/// `cpu.max` is `"<quota> <period>"` in microseconds, or `"max <period>"`.
pub fn cpu_max_cores(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `memory.max` is a byte count or `"max"`.
pub fn memory_max_bytes(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|b| *b > 0)
}

/// `MemTotal:  16318816 kB` from `/proc/meminfo`, in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_is_quota_over_period_and_max_means_none() {
        assert_eq!(cpu_max_cores("150000 100000\n"), Some(1.5));
        assert_eq!(cpu_max_cores("200000 100000"), Some(2.0));
        assert_eq!(cpu_max_cores("max 100000\n"), None);
        assert_eq!(cpu_max_cores(""), None);
    }

    #[test]
    fn memory_max_is_bytes_and_max_means_none() {
        assert_eq!(memory_max_bytes("536870912\n"), Some(536_870_912));
        assert_eq!(memory_max_bytes("max\n"), None);
    }

    #[test]
    fn mem_total_is_read_in_kibibytes() {
        let meminfo = "MemTotal:       16318816 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(16_318_816 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn every_ancestor_cgroup_is_searched() {
        let root = Path::new("/sys/fs/cgroup");
        let dirs = cgroup_dirs(root, "1:cpu:/\n0::/kubepods/pod1/ctr\n");
        let expected: Vec<PathBuf> =
            ["kubepods/pod1/ctr", "kubepods/pod1", "kubepods", ""].iter().map(|p| root.join(p)).collect();
        assert_eq!(dirs, expected);
        assert_eq!(cgroup_dirs(root, "0::/\n"), vec![root.join("")]);
        assert!(cgroup_dirs(root, "4:memory:/x\n").is_empty(), "cgroup v1 only: no v2 limits");
    }

    #[test]
    fn detected_limits_are_positive_on_linux() {
        let limits = detect();
        assert!(limits.cpu_cores > 0.0);
        if cfg!(target_os = "linux") {
            assert!(limits.memory_bytes > 0);
        }
    }
}
