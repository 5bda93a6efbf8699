//! Host metrics for the trailwatch agent, read from Linux `/proc` and `/sys`.
//!
//! The values follow what the Amazon CloudWatch agent publishes for its `cpu`, `mem`,
//! `swap`, `disk`, `diskio`, `net`, `netstat` and `processes` plugins (Telegraf inputs
//! on gopsutil), so dashboards and alarms built for that agent keep their meaning:
//!
//! - cpu `usage_*` are shares of the ticks between two `/proc/stat` samples; `time_*`
//!   are cumulative seconds.
//! - diskio and net counters are the change since the previous collection, because
//!   the agent turns them into deltas and drops each series' first sample;
//!   `iops_in_progress` stays a gauge.
//! - everything else is the current state.
//!
//! Field names carry no plugin prefix; the agent publishes `<plugin>_<field>`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Linux fixes the `/proc/stat` tick (USER_HZ) at 100 on every architecture the agent ships for.
const USER_HZ: f64 = 100.0;
/// `/proc/diskstats` counts 512-byte sectors whatever the device's own sector size.
const SECTOR_BYTES: u64 = 512;
const IFF_UP: u64 = 0x1;
const IFF_LOOPBACK: u64 = 0x8;

const CPU_TIME: &str = "time_user time_nice time_system time_idle time_iowait time_irq \
    time_softirq time_steal time_guest time_guest_nice time_active";
const CPU_USAGE: &str = "usage_user usage_nice usage_system usage_idle usage_iowait usage_irq \
    usage_softirq usage_steal usage_guest usage_guest_nice usage_active";
const MEM: &str = "active available available_percent buffered cached free inactive shared \
    total used used_percent";
const SWAP: &str = "free total used used_percent";
const DISK: &str = "free total used used_percent inodes_free inodes_used inodes_total";
/// Delta fields, each with its `/proc/diskstats` column counted from the reads column.
const DISKIO: &str = "reads writes read_bytes write_bytes read_time write_time io_time";
const DISKIO_COLS: [usize; 7] = [0, 4, 2, 6, 3, 7, 9];
/// Delta fields, each with its `/proc/net/dev` column counted from the received bytes.
const NET: &str = "bytes_sent bytes_recv packets_sent packets_recv err_in err_out drop_in drop_out";
const NET_COLS: [usize; 8] = [8, 0, 9, 1, 2, 10, 3, 11];
/// In the order of the kernel's TCP state numbers (1 = established), then the rest.
const NETSTAT: &str = "tcp_established tcp_syn_sent tcp_syn_recv tcp_fin_wait1 tcp_fin_wait2 \
    tcp_time_wait tcp_close tcp_close_wait tcp_last_ack tcp_listen tcp_closing tcp_none udp_socket";
/// The first eight are counted by the state letters of `PROC_STATES`.
const PROCESSES: &str = "blocked dead idle paging running sleeping stopped zombies total \
    total_threads unknown";
const PROC_STATES: &[u8] = b"DXIWRSTZ";

/// Where the kernel files are read from (tests point it at a fixture tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// The procfs mount, normally `/proc`.
    pub proc: PathBuf,
    /// The sysfs mount, normally `/sys`.
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
        }
    }
}

/// A host plugin of the CloudWatch agent's `metrics_collected` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plugin {
    /// `cpu`: usage percentages and cumulative times.
    Cpu,
    /// `mem`: physical memory.
    Mem,
    /// `swap`: swap space.
    Swap,
    /// `disk`: space and inodes per mounted file system.
    Disk,
    /// `diskio`: block device I/O counters.
    DiskIo,
    /// `net`: network interface counters.
    Net,
    /// `netstat`: socket counts by TCP state, and UDP sockets.
    Netstat,
    /// `processes`: process counts by state.
    Processes,
}

impl Plugin {
    /// Every plugin.
    pub const ALL: [Plugin; 8] = [
        Plugin::Cpu,
        Plugin::Mem,
        Plugin::Swap,
        Plugin::Disk,
        Plugin::DiskIo,
        Plugin::Net,
        Plugin::Netstat,
        Plugin::Processes,
    ];

    /// The plugin with the config key `name` (`"cpu"`, `"diskio"`, ...), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The config key, which is also the prefix of the published metric names.
    pub fn name(self) -> &'static str {
        match self {
            Plugin::Cpu => "cpu",
            Plugin::Mem => "mem",
            Plugin::Swap => "swap",
            Plugin::Disk => "disk",
            Plugin::DiskIo => "diskio",
            Plugin::Net => "net",
            Plugin::Netstat => "netstat",
            Plugin::Processes => "processes",
        }
    }
}

/// The CloudWatch unit the agent gives `field` of `plugin` when the config names none.
///
/// This is the agent's default unit table; a field it has no entry for (cpu `time_*`,
/// processes `zombies` and `unknown`) is published as `"None"`.
pub fn unit(plugin: Plugin, field: &str) -> &'static str {
    match plugin {
        Plugin::Cpu if field.starts_with("usage_") => "Percent",
        Plugin::Processes if field == "zombies" || field == "unknown" => "None",
        Plugin::Cpu => "None",
        _ if field.ends_with("percent") => "Percent",
        Plugin::Mem | Plugin::Swap => "Bytes",
        Plugin::Disk if !field.starts_with("inodes_") => "Bytes",
        Plugin::DiskIo if field.ends_with("_bytes") => "Bytes",
        Plugin::DiskIo if field.ends_with("_time") => "Milliseconds",
        Plugin::Net if field.starts_with("bytes_") => "Bytes",
        _ => "Count",
    }
}

/// Per-plugin settings from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// cpu: `["*"]` adds per-core series; disk: mount paths; diskio: device names;
    /// net: interface names. Names may be glob patterns for diskio and net.
    /// Empty or containing `"*"` means the plugin default (all, minus what it skips).
    pub resources: Vec<String>,
    /// cpu: report the `cpu-total` series (default true).
    pub totalcpu: bool,
    /// disk: file system types to leave out, besides `autofs` which is always left out.
    pub ignore_file_system_types: Vec<String>,
    /// disk: leave out the `device` tag.
    pub drop_device: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resources: Vec::new(),
            totalcpu: true,
            ignore_file_system_types: Vec::new(),
            drop_device: false,
        }
    }
}

impl Options {
    fn selects_all(&self) -> bool {
        self.resources.is_empty() || self.resources.iter().any(|r| r == "*")
    }
}

/// One value the host produced: field name without plugin prefix (`"usage_idle"`), value,
/// CloudWatch unit (see [`unit`]), and the plugin's own tags (the agent's `host` and
/// appended dimensions are not included).
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// Field name without the plugin prefix.
    pub name: &'static str,
    /// The value; counters of delta plugins are the change over the last interval.
    pub value: f64,
    /// CloudWatch unit name.
    pub unit: &'static str,
    /// Plugin tags, e.g. `[("cpu", "cpu-total")]`.
    pub tags: Vec<(String, String)>,
}

/// Keeps the previous samples that rates and deltas need.
#[derive(Debug, Default)]
pub struct Collector {
    roots: Roots,
    cpu: HashMap<String, CpuTimes>,
    counters: HashMap<(Plugin, String, &'static str), u64>,
}

impl Collector {
    /// A collector with no previous samples, reading from `roots`.
    pub fn new(roots: Roots) -> Self {
        Self {
            roots,
            ..Self::default()
        }
    }

    /// All fields of `plugin` now.
    ///
    /// What needs a previous sample is left out of a series' first collection: cpu
    /// returns only `time_*`, diskio only `iops_in_progress`, net nothing. The other
    /// plugins are complete every time. A counter that went down (device reset) reports
    /// its new value as the delta, as the agent does.
    pub fn collect(&mut self, plugin: Plugin, opts: &Options) -> io::Result<Vec<Field>> {
        let mut out = Vec::new();
        match plugin {
            Plugin::Cpu => self.cpu(opts, &mut out)?,
            Plugin::Mem => mem(&self.roots, &mut out)?,
            Plugin::Swap => swap(&self.roots, &mut out)?,
            Plugin::Disk => disk(&self.roots, opts, &mut out)?,
            Plugin::DiskIo => self.diskio(opts, &mut out)?,
            Plugin::Net => self.net(opts, &mut out)?,
            Plugin::Netstat => netstat(&self.roots, &mut out)?,
            Plugin::Processes => processes(&self.roots, &mut out)?,
        }
        Ok(out)
    }

    /// Adds the change of each of a series' counters since the previous collection.
    fn deltas(
        &mut self,
        out: &mut Vec<Field>,
        p: Plugin,
        tags: &[(String, String)],
        names: &'static str,
        now: &[u64],
    ) {
        let series: String = tags.iter().map(|(_, v)| v.as_str()).collect();
        for (field, &value) in names.split_whitespace().zip(now) {
            if let Some(prev) = self.counters.insert((p, series.clone(), field), value) {
                let delta = if value >= prev { value - prev } else { value };
                push(out, p, tags, field, &[delta as f64]);
            }
        }
    }

    fn cpu(&mut self, opts: &Options, out: &mut Vec<Field>) -> io::Result<()> {
        let samples = parse_stat(&fs::read_to_string(self.roots.proc.join("stat"))?);
        let per_core = opts.resources.iter().any(|r| r == "*");
        for (name, now) in &samples {
            let is_total = name == "cpu-total";
            if (is_total && !opts.totalcpu) || (!is_total && !per_core) {
                continue;
            }
            let tags = [tag("cpu", name)];
            let mut times = now.0.to_vec();
            times.push(now.active());
            push(out, Plugin::Cpu, &tags, CPU_TIME, &times);
            let Some(prev) = self.cpu.get(name) else {
                continue;
            };
            let span = now.total() - prev.total();
            // No tick elapsed, or the counters went back (hotplug): no meaningful share.
            if span <= 0.0 {
                continue;
            }
            let mut shares: Vec<f64> = now
                .0
                .iter()
                .zip(prev.0)
                .map(|(n, p)| 100.0 * (n - p) / span)
                .collect();
            // Guest time is also counted in user and nice; it is reported once, as guest.
            shares[0] -= shares[GUEST];
            shares[1] -= shares[GUEST_NICE];
            shares.push(100.0 * (now.active() - prev.active()) / span);
            push(out, Plugin::Cpu, &tags, CPU_USAGE, &shares);
        }
        // Every core is remembered so that a config change does not restart the rates.
        self.cpu = samples.into_iter().collect();
        Ok(())
    }

    fn diskio(&mut self, opts: &Options, out: &mut Vec<Field>) -> io::Result<()> {
        let text = fs::read_to_string(self.roots.proc.join("diskstats"))?;
        // Devices may be configured as /dev paths; diskstats has bare names.
        let wanted: Vec<&str> = opts
            .resources
            .iter()
            .map(|r| r.rsplit('/').next().unwrap_or(r))
            .collect();
        for line in text.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 14 || !(opts.selects_all() || matches_any(&wanted, cols[2])) {
                continue;
            }
            let n = parse_u64s(&cols[3..14])?;
            // Never-used devices (unused loop and ram disks) are noise the agent skips.
            if n.iter().all(|&v| v == 0) {
                continue;
            }
            let tags = [tag("name", cols[2])];
            push(
                out,
                Plugin::DiskIo,
                &tags,
                "iops_in_progress",
                &[n[8] as f64],
            );
            let mut now = DISKIO_COLS.map(|i| n[i]);
            now[2] = now[2].saturating_mul(SECTOR_BYTES);
            now[3] = now[3].saturating_mul(SECTOR_BYTES);
            self.deltas(out, Plugin::DiskIo, &tags, DISKIO, &now);
        }
        Ok(())
    }

    fn net(&mut self, opts: &Options, out: &mut Vec<Field>) -> io::Result<()> {
        let text = fs::read_to_string(self.roots.proc.join("net/dev"))?;
        let wanted: Vec<&str> = opts.resources.iter().map(String::as_str).collect();
        for line in text.lines().skip(2) {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            let keep = if opts.selects_all() {
                // Without an explicit list the agent reports only interfaces that are up
                // and not loopback.
                interface_flags(&self.roots.sys, name)
                    .is_some_and(|f| f & IFF_UP != 0 && f & IFF_LOOPBACK == 0)
            } else {
                matches_any(&wanted, name)
            };
            let cols: Vec<&str> = rest.split_whitespace().collect();
            if !keep || cols.len() < 16 {
                continue;
            }
            let n = parse_u64s(&cols)?;
            let now = NET_COLS.map(|i| n[i]);
            self.deltas(out, Plugin::Net, &[tag("interface", name)], NET, &now);
        }
        Ok(())
    }
}

/// The host name (uname nodename), which the agent uses as its `host` dimension.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn tag(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

/// Adds one field per name of the space-separated `names`, paired with `values`.
fn push(
    out: &mut Vec<Field>,
    p: Plugin,
    tags: &[(String, String)],
    names: &'static str,
    values: &[f64],
) {
    out.extend(
        names
            .split_whitespace()
            .zip(values)
            .map(|(name, &value)| Field {
                name,
                value,
                unit: unit(p, name),
                tags: tags.to_vec(),
            }),
    );
}

fn parse_u64s(cols: &[&str]) -> io::Result<Vec<u64>> {
    let bad = |c: &str, e| io::Error::new(io::ErrorKind::InvalidData, format!("{c:?}: {e}"));
    cols.iter()
        .map(|c| c.parse::<u64>().map_err(|e| bad(c, e)))
        .collect()
}

/// Exact names, or glob patterns as the agent's interface and device filters accept.
fn matches_any(patterns: &[&str], name: &str) -> bool {
    patterns
        .iter()
        .any(|p| *p == name || glob::Pattern::new(p).is_ok_and(|g| g.matches(name)))
}

fn interface_flags(sys: &Path, name: &str) -> Option<u64> {
    let text = fs::read_to_string(sys.join("class/net").join(name).join("flags")).ok()?;
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

const IDLE: usize = 3;
const GUEST: usize = 8;
const GUEST_NICE: usize = 9;

/// One `/proc/stat` cpu line in seconds: user, nice, system, idle, iowait, irq, softirq,
/// steal, guest, guest_nice.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CpuTimes([f64; 10]);

impl CpuTimes {
    /// Guest time is already counted inside user and nice, so it stays out of the total.
    fn total(&self) -> f64 {
        self.0[..GUEST].iter().sum()
    }

    fn active(&self) -> f64 {
        self.total() - self.0[IDLE]
    }
}

fn parse_stat(text: &str) -> Vec<(String, CpuTimes)> {
    let parse = |line: &str| {
        let mut cols = line.split_whitespace();
        let label = cols.next().filter(|l| l.starts_with("cpu"))?;
        let mut t = CpuTimes::default();
        let mut count = 0;
        // steal, guest and guest_nice are missing on very old kernels and stay zero.
        for (slot, col) in t.0.iter_mut().zip(cols) {
            *slot = col.parse::<f64>().ok()? / USER_HZ;
            count += 1;
        }
        let name = if label == "cpu" { "cpu-total" } else { label };
        (count >= 7).then(|| (name.to_owned(), t))
    };
    text.lines().filter_map(parse).collect()
}

/// `/proc/meminfo` in bytes.
fn meminfo(roots: &Roots) -> io::Result<HashMap<String, u64>> {
    let text = fs::read_to_string(roots.proc.join("meminfo"))?;
    let parse = |line: &str| {
        let (key, rest) = line.split_once(':')?;
        let mut cols = rest.split_whitespace();
        let n: u64 = cols.next()?.parse().ok()?;
        // HugePages_* lines are page counts without a unit.
        let bytes = if cols.next() == Some("kB") {
            n.saturating_mul(1024)
        } else {
            n
        };
        Some((key.to_owned(), bytes))
    };
    Ok(text.lines().filter_map(parse).collect())
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

fn mem(roots: &Roots, out: &mut Vec<Field>) -> io::Result<()> {
    let info = meminfo(roots)?;
    let get = |k: &str| info.get(k).copied().unwrap_or(0) as f64;
    let (total, free, buffers) = (get("MemTotal"), get("MemFree"), get("Buffers"));
    // gopsutil folds reclaimable slab into the page cache.
    let cached = get("Cached") + get("SReclaimable");
    // Only pre-3.14 kernels lack MemAvailable; free + cache is the usual estimate there.
    let avail = info
        .get("MemAvailable")
        .map_or(free + cached, |&a| a as f64);
    // The agent's gopsutil still uses this older definition of used, not total - available.
    let used = (total - free - buffers - cached).max(0.0);
    let (active, inactive, shared) = (get("Active"), get("Inactive"), get("Shmem"));
    let (pct_avail, pct_used) = (percent(avail, total), percent(used, total));
    let values = [
        active, avail, pct_avail, buffers, cached, free, inactive, shared, total, used, pct_used,
    ];
    push(out, Plugin::Mem, &[], MEM, &values);
    Ok(())
}

fn swap(roots: &Roots, out: &mut Vec<Field>) -> io::Result<()> {
    let info = meminfo(roots)?;
    let get = |k: &str| info.get(k).copied().unwrap_or(0) as f64;
    let (total, free) = (get("SwapTotal"), get("SwapFree"));
    let used = (total - free).max(0.0);
    push(
        out,
        Plugin::Swap,
        &[],
        SWAP,
        &[free, total, used, percent(used, total)],
    );
    Ok(())
}

/// Undoes the octal escapes (`\040` for a space) the kernel writes into mount tables.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let digits = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let code = digits.map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')));
        match code.and_then(|c| u8::try_from(c).ok()) {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn disk(roots: &Roots, opts: &Options, out: &mut Vec<Field>) -> io::Result<()> {
    let text = fs::read_to_string(roots.proc.join("self/mounts"))?;
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let (Some(source), Some(mount), Some(fstype)) = (cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        // autofs entries are placeholders, and statting them would trigger the mount.
        if fstype == "autofs" || opts.ignore_file_system_types.iter().any(|t| t == fstype) {
            continue;
        }
        let path = unescape_mount(mount);
        if !opts.selects_all() && !opts.resources.contains(&path) {
            continue;
        }
        // Mounts that vanished or that we may not stat are skipped, as the agent does.
        let Ok(st) = rustix::fs::statvfs(path.as_str()) else {
            continue;
        };
        // gopsutil scales by the statfs block size, which equals the fragment size on Linux.
        let bytes = |blocks: u64| blocks.saturating_mul(st.f_bsize) as f64;
        let (total, free) = (bytes(st.f_blocks), bytes(st.f_bavail));
        let used = bytes(st.f_blocks.saturating_sub(st.f_bfree));
        // Pseudo file systems (proc, sysfs, cgroup...) have no blocks.
        if total == 0.0 {
            continue;
        }
        let source = unescape_mount(source);
        let device = match source.as_str() {
            "" | "none" => fstype.to_owned(),
            dev => dev.replace("/dev/", ""),
        };
        let mut tags = vec![tag("path", &path)];
        if !opts.drop_device {
            tags.push(tag("device", &device));
        }
        tags.push(tag("fstype", fstype));
        let (files, ffree) = (st.f_files as f64, st.f_ffree as f64);
        // Percent of the space non-root users can have, as df shows it.
        let pct = percent(used, used + free);
        push(
            out,
            Plugin::Disk,
            &tags,
            DISK,
            &[free, total, used, pct, ffree, files - ffree, files],
        );
    }
    Ok(())
}

/// An address as the agent compares it: an IPv4-mapped IPv6 address equals the IPv4 one.
fn canonical_addr(hex: &str) -> &str {
    match hex.split_once(':') {
        Some((ip, _)) if ip.len() == 32 && ip.starts_with("0000000000000000FFFF0000") => &hex[24..],
        _ => hex,
    }
}

/// Counts sockets the way the agent's netstat does: one per distinct (type, local,
/// remote, state), so sockets sharing an address count once. Unix sockets are included,
/// as in the agent: datagram ones count as `udp_socket`, the others as `tcp_none`.
fn netstat(roots: &Roots, out: &mut Vec<Field>) -> io::Result<()> {
    const NONE: usize = 11;
    const UDP: usize = 12;
    let mut counts = [0.0; 13];
    let mut seen = HashSet::new();
    for (file, stream) in [
        ("tcp", true),
        ("tcp6", true),
        ("udp", false),
        ("udp6", false),
    ] {
        let text = match fs::read_to_string(roots.proc.join("net").join(file)) {
            Ok(t) => t,
            // A kernel without IPv6 has no *6 files.
            Err(e) if file.ends_with('6') && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let state = if stream { cols[3] } else { "NONE" };
            let (local, remote) = (canonical_addr(cols[1]), canonical_addr(cols[2]));
            if !seen.insert(format!("{stream}-{local}-{remote}-{state}")) {
                continue;
            }
            // States outside 1..=11 (none in practice) are counted nowhere, as in the agent.
            let slot = match u8::from_str_radix(state, 16) {
                _ if !stream => Some(UDP),
                Ok(s @ 1..=11) => Some(usize::from(s) - 1),
                _ => None,
            };
            if let Some(slot) = slot {
                counts[slot] += 1.0;
            }
        }
    }
    let text = fs::read_to_string(roots.proc.join("net/unix"))?;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // The agent reads the hex type column as decimal; types are single digits, so it agrees.
        let Some(Ok(kind)) = cols
            .get(4)
            .filter(|_| cols.len() >= 7)
            .map(|k| k.parse::<u32>())
        else {
            continue;
        };
        // A path with spaces splits into more columns; the agent then treats it as unnamed.
        let path = if cols.len() == 8 { cols[7] } else { "" };
        if seen.insert(format!("unix-{kind}-{path}")) {
            counts[if kind == 2 { UDP } else { NONE }] += 1.0;
        }
    }
    push(out, Plugin::Netstat, &[], NETSTAT, &counts);
    Ok(())
}

fn processes(roots: &Roots, out: &mut Vec<Field>) -> io::Result<()> {
    // Indexes into PROCESSES.
    let mut n = [0.0; 11];
    for entry in fs::read_dir(&roots.proc)? {
        let entry = entry?;
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let data = match fs::read(entry.path().join("stat")) {
            Ok(d) => d,
            // The process exited between listing and reading.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => continue,
            Err(e) => return Err(e),
        };
        // The command name may contain spaces and parentheses; the state follows the last ')'.
        let Some(close) = data.iter().rposition(|&b| b == b')') else {
            continue;
        };
        let rest = String::from_utf8_lossy(&data[close + 1..]);
        let cols: Vec<&str> = rest.split_whitespace().collect();
        let Some(state) = cols.first().and_then(|s| s.bytes().next()) else {
            continue;
        };
        // 't' is stopped by a tracer, which the agent counts as stopped too.
        let state = if state == b't' { b'T' } else { state };
        if let Some(slot) = PROC_STATES.iter().position(|&c| c == state) {
            n[slot] += 1.0;
        }
        n[8] += 1.0;
        let threads = cols.get(17).and_then(|t| t.parse::<f64>().ok());
        n[9] += threads.unwrap_or(0.0);
    }
    // n[10], unknown, stays zero: only the agent's ps-based collector can fill it.
    push(out, Plugin::Processes, &[], PROCESSES, &n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh fixture tree with `proc/` and `sys/` under the system temp dir.
    fn fixture(name: &str) -> (Roots, Collector) {
        let base =
            std::env::temp_dir().join(format!("agent-metrics-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let roots = Roots {
            proc: base.join("proc"),
            sys: base.join("sys"),
        };
        fs::create_dir_all(&roots.proc).unwrap();
        (roots.clone(), Collector::new(roots))
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn with(resources: &[&str]) -> Options {
        Options {
            resources: resources.iter().map(|r| r.to_string()).collect(),
            ..Options::default()
        }
    }

    fn get(fields: &[Field], name: &str, tags: &[(&str, &str)]) -> f64 {
        let has = |f: &Field| tags.iter().all(|(k, v)| f.tags.contains(&tag(k, v)));
        let found = fields.iter().find(|f| f.name == name && has(f));
        found
            .unwrap_or_else(|| panic!("no {name} {tags:?} in {fields:?}"))
            .value
    }

    /// Asserts every `name=value` of `spec` on the fields carrying `tags`.
    fn check(fields: &[Field], tags: &[(&str, &str)], spec: &str) {
        for item in spec.split_whitespace() {
            let (name, want) = item.split_once('=').unwrap();
            let got = get(fields, name, tags);
            assert!(
                (got - want.parse::<f64>().unwrap()).abs() < 1e-9,
                "{name}: {got} != {want}"
            );
        }
    }

    #[test]
    fn plugin_names_round_trip() {
        for p in Plugin::ALL {
            assert_eq!(Plugin::parse(p.name()), Some(p));
        }
        assert_eq!(Plugin::parse("diskio"), Some(Plugin::DiskIo));
        assert_eq!(Plugin::parse("ethtool"), None);
    }

    #[test]
    fn units_follow_the_agent_table() {
        let cases = "cpu/usage_idle=Percent cpu/time_user=None mem/used=Bytes \
            mem/available_percent=Percent swap/free=Bytes disk/total=Bytes disk/inodes_free=Count \
            disk/used_percent=Percent diskio/read_bytes=Bytes diskio/io_time=Milliseconds \
            diskio/reads=Count diskio/iops_in_progress=Count net/bytes_recv=Bytes net/drop_in=Count \
            netstat/tcp_none=Count processes/total=Count processes/zombies=None";
        for case in cases.split_whitespace() {
            let (field, want) = case.split_once('=').unwrap();
            let (plugin, field) = field.split_once('/').unwrap();
            assert_eq!(unit(Plugin::parse(plugin).unwrap(), field), want, "{case}");
        }
    }

    #[test]
    fn cpu_shares_from_two_samples() {
        let (roots, mut c) = fixture("cpu");
        //                      user nice sys idle iow irq sirq steal guest gnice
        write(
            &roots.proc,
            "stat",
            "cpu  100 20 50 800 10 5 5 10 40 0\ncpu0 50 10 25 400 5 2 3 5 20 0\nintr 1\n",
        );
        let first = c.collect(Plugin::Cpu, &Options::default()).unwrap();
        assert!(first.iter().all(|f| f.name.starts_with("time_")));
        assert!(first.iter().all(|f| f.tags == [tag("cpu", "cpu-total")]));
        check(
            &first,
            &[],
            "time_user=1 time_guest=0.4 time_idle=8 time_active=2",
        );

        // user +300 (of which guest +100), system +100, idle +500, iowait +50, irq +10,
        // softirq +20, steal +20: 1000 ticks elapsed. cpu0 only idled.
        write(
            &roots.proc,
            "stat",
            "cpu  400 20 150 1300 60 15 25 30 140 0\ncpu0 50 10 25 500 5 2 3 5 20 0\n",
        );
        let second = c.collect(Plugin::Cpu, &with(&["*"])).unwrap();
        let spec = "usage_user=20 usage_nice=0 usage_system=10 usage_idle=50 usage_iowait=5 \
            usage_irq=1 usage_softirq=2 usage_steal=2 usage_guest=10 usage_guest_nice=0 usage_active=50";
        check(&second, &[("cpu", "cpu-total")], spec);
        check(
            &second,
            &[("cpu", "cpu0")],
            "usage_idle=100 usage_active=0 time_idle=5",
        );

        let cores_only = Options {
            totalcpu: false,
            ..with(&["*"])
        };
        let third = c.collect(Plugin::Cpu, &cores_only).unwrap();
        assert!(!third.is_empty() && third.iter().all(|f| f.tags == [tag("cpu", "cpu0")]));
        // No tick elapsed since the last sample: no shares.
        assert!(third.iter().all(|f| f.name.starts_with("time_")));
    }

    #[test]
    fn mem_and_swap_from_meminfo() {
        let (roots, mut c) = fixture("mem");
        let info = "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 600 kB\nBuffers: 50 kB\n\
            Cached: 150 kB\nSwapCached: 0 kB\nActive: 300 kB\nInactive: 250 kB\nSwapTotal: 400 kB\n\
            SwapFree: 100 kB\nShmem: 10 kB\nSReclaimable: 100 kB\nHugePages_Total: 0\n";
        write(&roots.proc, "meminfo", info);
        let mem = c.collect(Plugin::Mem, &Options::default()).unwrap();
        // In bytes (kB * 1024). used = 1000 - 200 free - 50 buffers - (150 cached + 100
        // reclaimable slab) = 500 kB.
        let spec = "total=1024000 free=204800 buffered=51200 cached=256000 available=614400 \
            used=512000 active=307200 inactive=256000 shared=10240 used_percent=50 available_percent=60";
        check(&mem, &[], spec);
        let swap = c.collect(Plugin::Swap, &Options::default()).unwrap();
        check(
            &swap,
            &[],
            "total=409600 free=102400 used=307200 used_percent=75",
        );
    }

    #[test]
    fn disk_uses_statvfs_and_filters() {
        let (roots, mut c) = fixture("disk");
        let mounts = "/dev/sda1 / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n\
            systemd-1 /nowhere autofs rw 0 0\nnone /tmp\\040x tmpfs rw 0 0\n";
        write(&roots.proc, "self/mounts", mounts);
        let all = c.collect(Plugin::Disk, &Options::default()).unwrap();
        // proc has no blocks, autofs is never statted, and "/tmp x" does not exist.
        assert_eq!(all.len(), 7);
        assert!(all.iter().all(|f| f.tags
            == [
                tag("path", "/"),
                tag("device", "sda1"),
                tag("fstype", "ext4")
            ]));

        let st = rustix::fs::statvfs("/").unwrap();
        let v = |name: &str| get(&all, name, &[]);
        let size = (st.f_blocks * st.f_bsize) as f64;
        // Other processes write to / meanwhile, so the space in use is compared loosely.
        let near = |a: f64, b: u64| (a - b as f64).abs() <= 0.01 * size;
        assert_eq!(v("total"), size);
        assert!(near(v("free"), st.f_bavail * st.f_bsize));
        assert!(near(v("used"), (st.f_blocks - st.f_bfree) * st.f_bsize));
        assert!((v("used_percent") - v("used") * 100.0 / (v("used") + v("free"))).abs() < 1e-9);
        assert_eq!(v("inodes_total"), st.f_files as f64);

        let dropped = c
            .collect(
                Plugin::Disk,
                &Options {
                    drop_device: true,
                    ..with(&["/"])
                },
            )
            .unwrap();
        assert!(dropped
            .iter()
            .all(|f| f.tags == [tag("path", "/"), tag("fstype", "ext4")]));
        let ignored = Options {
            ignore_file_system_types: vec!["ext4".into()],
            ..with(&["*"])
        };
        assert!(c.collect(Plugin::Disk, &ignored).unwrap().is_empty());
        assert!(c
            .collect(Plugin::Disk, &with(&["/data"]))
            .unwrap()
            .is_empty());
        assert_eq!(
            unescape_mount("/mnt/a\\040b\\011c\\\\x\\8"),
            "/mnt/a b\tc\\\\x\\8"
        );
    }

    #[test]
    fn diskio_deltas() {
        let (roots, mut c) = fixture("diskio");
        let line = |name: &str, n: [u64; 11]| {
            let v: Vec<String> = n.iter().map(u64::to_string).collect();
            format!("   8       0 {name} {} 0 0 0 0\n", v.join(" "))
        };
        // reads merged sectors ms writes merged sectors ms in-flight io_ms weighted
        let sample = |r, s, w, t, io| {
            let sda = line("sda", [r, 1, s, 40, w, 2, 2 * s, 80, t, io, 900]);
            format!(
                "{sda}{}{}",
                line("nvme0n1", [5; 11]),
                line("loop0", [0; 11])
            )
        };
        write(&roots.proc, "diskstats", &sample(100, 1000, 50, 3, 500));
        let first = c.collect(Plugin::DiskIo, &Options::default()).unwrap();
        let names: Vec<_> = first
            .iter()
            .map(|f| (f.name, f.tags[0].1.as_str()))
            .collect();
        assert_eq!(
            names,
            [("iops_in_progress", "sda"), ("iops_in_progress", "nvme0n1")]
        );
        check(&first, &[("name", "sda")], "iops_in_progress=3");

        write(&roots.proc, "diskstats", &sample(130, 1800, 90, 1, 750));
        let second = c.collect(Plugin::DiskIo, &with(&["/dev/sda"])).unwrap();
        let spec = "reads=30 writes=40 read_bytes=409600 write_bytes=819200 read_time=0 \
            write_time=0 io_time=250 iops_in_progress=1";
        check(&second, &[("name", "sda")], spec);
        assert_eq!(second.len(), 8);
        assert!(second.iter().all(|f| f.tags == [tag("name", "sda")]));

        // A device that was reset reports its new count; globs select devices.
        write(&roots.proc, "diskstats", &line("nvme0n1", [2; 11]));
        let third = c.collect(Plugin::DiskIo, &with(&["nvme*"])).unwrap();
        check(&third, &[("name", "nvme0n1")], "reads=2 iops_in_progress=2");
    }

    #[test]
    fn net_deltas_skip_loopback_and_down() {
        let (roots, mut c) = fixture("net");
        // Column i grows by i*k.
        let dev = |k: u64| {
            let row = |name: &str, base: u64| {
                let v: Vec<String> = (0..16).map(|i| (base + i * k).to_string()).collect();
                format!("{name:>6}: {}\n", v.join(" "))
            };
            format!(
                "Inter-| Receive\n face |bytes\n{}{}{}",
                row("lo", 1),
                row("eth0", 100),
                row("down0", 7)
            )
        };
        write(&roots.sys, "class/net/lo/flags", "0x9\n");
        write(&roots.sys, "class/net/eth0/flags", "0x1003\n");
        write(&roots.sys, "class/net/down0/flags", "0x1002\n");
        write(&roots.proc, "net/dev", &dev(1));
        assert!(c
            .collect(Plugin::Net, &Options::default())
            .unwrap()
            .is_empty());
        assert!(c.collect(Plugin::Net, &with(&["lo"])).unwrap().is_empty());

        write(&roots.proc, "net/dev", &dev(2));
        let second = c.collect(Plugin::Net, &with(&["*"])).unwrap();
        assert_eq!(second.len(), 8);
        assert!(second.iter().all(|f| f.tags == [tag("interface", "eth0")]));
        let spec = "bytes_recv=0 packets_recv=1 err_in=2 drop_in=3 bytes_sent=8 packets_sent=9 \
            err_out=10 drop_out=11";
        check(&second, &[], spec);
        check(
            &c.collect(Plugin::Net, &with(&["l?"])).unwrap(),
            &[("interface", "lo")],
            "bytes_sent=8",
        );
    }

    #[test]
    fn netstat_counts_states() {
        let (roots, mut c) = fixture("netstat");
        let table = |rows: &[(&str, &str, &str)]| {
            let mut t =
                String::from("  sl  local_address rem_address   st tx_queue rx_queue ...\n");
            for (l, r, st) in rows {
                t +=
                    &format!("   0: {l} {r} {st} 00000000:00000000 00:00000000 00000000 0 0 1 1\n");
            }
            t
        };
        let tcp = table(&[
            ("00000000:0016", "00000000:0000", "0A"),
            ("0100007F:1F90", "0100007F:C350", "01"),
            ("0100007F:C350", "0100007F:1F90", "01"),
            // The same connection listed twice counts once.
            ("0100007F:C350", "0100007F:1F90", "01"),
            ("0100007F:C351", "0100007F:1F90", "06"),
        ]);
        let (any6, v6) = ("0".repeat(32), format!("{}01000000", "0".repeat(24)));
        let mapped = "0000000000000000FFFF00000100007F";
        let tcp6 = table(&[
            (&format!("{any6}:0016"), &format!("{any6}:0000"), "0A"),
            // The IPv4-mapped twin of a tcp entry.
            (&format!("{mapped}:C351"), &format!("{mapped}:1F90"), "06"),
            (&format!("{v6}:0050"), &format!("{v6}:9000"), "08"),
        ]);
        write(&roots.proc, "net/tcp", &tcp);
        write(&roots.proc, "net/tcp6", &tcp6);
        write(
            &roots.proc,
            "net/udp",
            &table(&[
                ("00000000:0044", "00000000:0000", "07"),
                ("0100007F:0035", "00000000:0000", "07"),
            ]),
        );
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/a.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 101\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 102\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 103 /run/log\n\
            0000000000000000: 00000002 00000000 00000000 0005 01 104 /run/seq\n";
        write(&roots.proc, "net/unix", unix);
        let f = c.collect(Plugin::Netstat, &Options::default()).unwrap();
        // tcp_none: the named stream socket, the unnamed ones (once), the seqpacket one.
        let spec =
            "tcp_listen=2 tcp_established=2 tcp_time_wait=1 tcp_close_wait=1 tcp_syn_sent=0 \
            tcp_close=0 tcp_none=3 udp_socket=3";
        check(&f, &[], spec);
        assert_eq!(f.len(), 13);
        assert!(f.iter().all(|x| x.unit == "Count" && x.tags.is_empty()));
    }

    #[test]
    fn processes_by_state() {
        let (roots, mut c) = fixture("processes");
        let procs = [
            ("systemd", 'S', 1),
            ("a) (b c)", 'R', 4),
            ("kworker", 'I', 1),
            ("dd", 'D', 1),
            ("gone", 'Z', 1),
            ("vi", 'T', 1),
            ("gdb", 't', 2),
            ("old", 'W', 1),
            ("x", 'X', 1),
            ("bash", 'S', 1),
        ];
        for (pid, (comm, state, threads)) in procs.into_iter().enumerate() {
            // num_threads is the 20th field, the 17th after the state.
            let tail = format!("{}{threads}{}", "0 ".repeat(16), " 0".repeat(30));
            write(
                &roots.proc,
                &format!("{}/stat", pid + 1),
                &format!("{} ({comm}) {state} {tail}\n", pid + 1),
            );
        }
        write(&roots.proc, "self/stat", "garbage");
        fs::create_dir_all(roots.proc.join("11")).unwrap(); // exited before its stat was read
        let f = c.collect(Plugin::Processes, &Options::default()).unwrap();
        let spec = "running=1 sleeping=2 idle=1 blocked=1 zombies=1 stopped=2 paging=1 dead=1 \
            total=10 total_threads=14 unknown=0";
        check(&f, &[], spec);
        assert_eq!(f.len(), 11);
    }

    #[test]
    fn real_host() {
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
        let line = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .unwrap();
        let kb: f64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
        let mut c = Collector::new(Roots::default());
        let mem = c.collect(Plugin::Mem, &Options::default()).unwrap();
        assert_eq!(get(&mem, "total", &[]), kb * 1024.0);

        let opts = Options::default();
        c.collect(Plugin::Cpu, &opts).unwrap();
        let mut shares = 0.0;
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let usage = c.collect(Plugin::Cpu, &opts).unwrap();
            let parts = usage
                .iter()
                .filter(|f| f.name.starts_with("usage_") && f.name != "usage_active");
            shares = parts.map(|f| f.value).sum();
            if shares > 0.0 {
                break;
            }
        }
        assert!((shares - 100.0).abs() < 1e-6, "cpu shares sum to {shares}");
        for p in Plugin::ALL {
            c.collect(p, &opts).unwrap();
        }
        assert!(!hostname().is_empty());
    }
}
