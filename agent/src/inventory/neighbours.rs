//! `neighbours`: the ARP (IPv4) and NDP (IPv6) neighbour table — which hosts on the local
//! links this machine has talked to, with their link-layer addresses.
//!
//! Two sources, both parsed here:
//!
//! * `ip -4 neigh show` and `ip -6 neigh show` (iproute2), one entry per line:
//!   `ADDRESS [dev IFNAME] [lladdr MAC] [router] [proxy] [extern_learn] [offload]
//!   [used A/B/C] [probes N] [proto P] STATE…`. IPv6 neighbours exist only here: the
//!   kernel has no `/proc` file for them.
//! * `/proc/net/arp`, the IPv4 fallback when `ip` is not installed (minimal containers):
//!   `IP  HW-type  Flags  HW-address  Mask  Device`. It carries no NUD state, only the
//!   `ATF_*` flags the kernel derives from it, so its states are coarser (see
//!   [`parse_arp`]).
//!
//! MAC addresses are lower-cased (the kernel prints lower case already; other tools and
//! fixtures may not), and an entry without a link-layer address (`INCOMPLETE`, `FAILED`)
//! has none rather than `00:00:00:00:00:00`. Both parsers skip what they do not
//! understand and never panic.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{tag, take_till1};
use nom::character::complete::{hex_digit1, space0, space1};
use nom::combinator::{eof, map_res};
use nom::sequence::preceded;
use serde::{Deserialize, Serialize};

/// `ATF_COM`: the entry has a valid link-layer address.
const ATF_COM: u32 = 0x02;
/// `ATF_PERM`: a static entry.
const ATF_PERM: u32 = 0x04;
/// `ATF_PUBL`: a proxy-ARP entry (this host answers for the address).
const ATF_PUBL: u32 = 0x08;

/// Where `ip` is looked for. An absolute path, not `PATH`: the agent runs as root, and
/// must not run whatever program named `ip` comes first in an inherited `PATH`.
const IP_CANDIDATES: &[&str] = &[
    "/usr/sbin/ip",
    "/sbin/ip",
    "/usr/bin/ip",
    "/bin/ip",
    "/run/current-system/sw/bin/ip",
];

/// How long `ip neigh show` may take before it is killed (and `/proc/net/arp` read
/// instead): a wedged netlink socket must not stall the inventory.
const IP_TIMEOUT: Duration = Duration::from_secs(5);

/// The most output of `ip` read. A table this large is not a neighbour table anyone
/// needs whole; beyond it `ip` is cut off and counts as failed.
const MAX_IP_OUTPUT: u64 = 16 << 20;

/// One entry of the neighbour table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Neighbour {
    pub ip: IpAddr,
    /// The link-layer address, lower case (`52:54:00:12:34:56`); `None` while unresolved.
    pub mac: Option<String>,
    /// The interface the neighbour is on; empty if the source did not say.
    pub interface: String,
    /// The NUD state as `ip` names it (`REACHABLE`, `STALE`, `DELAY`, `PROBE`, `FAILED`,
    /// `INCOMPLETE`, `PERMANENT`, `NOARP`, `NONE`; several joined by a space when the
    /// kernel reports several). From `/proc/net/arp`: `COMPLETE`, `INCOMPLETE`,
    /// `PERMANENT` or `PROXY` (see [`parse_arp`]). Empty when `ip` printed none.
    pub state: String,
}

/// A run of non-blank characters.
fn token(i: &str) -> IResult<&str, &str> {
    take_till1(|c: char| c.is_ascii_whitespace())(i)
}

/// `0xHEX`.
fn hex_number(i: &str) -> IResult<&str, u32> {
    map_res(preceded(tag("0x"), hex_digit1), |h| {
        u32::from_str_radix(h, 16)
    })
    .parse(i)
}

/// One row of `/proc/net/arp`.
fn arp_row(line: &str) -> Option<Neighbour> {
    let mut parser = (
        space0,
        map_res(token, str::parse::<Ipv4Addr>),
        space1,
        hex_number, // HW type
        space1,
        hex_number, // Flags
        space1,
        token, // HW address
        space1,
        token, // Mask
        space1,
        token, // Device
        space0,
        eof,
    );
    let result: IResult<&str, _> = parser.parse(line);
    let (_, (_, ip, _, _hw_type, _, flags, _, hw, _, _mask, _, device, _, _)) = result.ok()?;
    let state = if flags & ATF_PUBL != 0 {
        "PROXY"
    } else if flags & ATF_PERM != 0 {
        "PERMANENT"
    } else if flags & ATF_COM != 0 {
        "COMPLETE"
    } else {
        "INCOMPLETE"
    };
    // A proxy entry's address is all zeroes too: it is not a neighbour's address.
    let mac = (flags & ATF_COM != 0 && flags & ATF_PUBL == 0).then(|| hw.to_ascii_lowercase());
    Some(Neighbour {
        ip: IpAddr::V4(ip),
        mac,
        interface: device.to_string(),
        state: state.to_string(),
    })
}

/// The entries of `/proc/net/arp`, in order; the header and malformed rows are skipped.
///
/// The file has flags, not NUD states: flags `0x0` (an address being resolved, or one that
/// failed to resolve) is `INCOMPLETE` without a MAC, `ATF_PERM` is `PERMANENT`, `ATF_PUBL`
/// (proxy ARP) is `PROXY` without a MAC, and any other resolved entry is `COMPLETE`
/// (`ip` would say `REACHABLE`, `STALE`, `DELAY` or `PROBE`).
pub fn parse_arp(text: &str) -> Vec<Neighbour> {
    text.lines().filter_map(arp_row).collect()
}

/// Whether a word of `ip neigh` output is (part of) the NUD state: states are the only
/// upper-case words `ip` prints.
fn is_state_word(word: &str) -> bool {
    word.len() >= 2 && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// One line of `ip neigh show`.
fn ip_neigh_line(line: &str) -> Option<Neighbour> {
    let result: IResult<&str, _> = (space0, map_res(token, str::parse::<IpAddr>)).parse(line);
    let (rest, (_, ip)) = result.ok()?;
    let mut neighbour = Neighbour {
        ip,
        mac: None,
        interface: String::new(),
        state: String::new(),
    };
    let mut states: Vec<&str> = Vec::new();
    let mut words = rest.split_ascii_whitespace();
    while let Some(word) = words.next() {
        match word {
            "dev" => neighbour.interface = words.next()?.to_string(),
            "lladdr" => neighbour.mac = Some(words.next()?.to_ascii_lowercase()),
            // Keywords with a value that is of no use here.
            "used" | "probes" | "proto" | "protocol" | "vni" | "port" | "via" => {
                words.next()?;
            }
            w if is_state_word(w) => states.push(w),
            // Flags (`router`, `proxy`, `extern_learn`, `offload`, `managed`, …) and
            // whatever a newer iproute2 adds.
            _ => {}
        }
    }
    neighbour.state = states.join(" ");
    Some(neighbour)
}

/// The entries of `ip neigh show` output (either family, or both), in order. Lines that
/// do not start with an IP address are skipped, as is a line whose keyword lacks its
/// value (output cut off mid-line).
pub fn parse_ip_neigh(text: &str) -> Vec<Neighbour> {
    text.lines().filter_map(ip_neigh_line).collect()
}

/// The first `ip` of [`IP_CANDIDATES`] that exists.
fn find_ip() -> Option<PathBuf> {
    IP_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Runs `program args…` and returns its standard output, or `None` if it cannot be
/// started, fails, prints more than [`MAX_IP_OUTPUT`], or is still running after
/// `timeout` (then it is killed).
fn run_with_timeout(program: &Path, args: &[&str], timeout: Duration) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Read on another thread so a large table cannot fill the pipe and block the child
    // while this thread waits for it to exit.
    let reader = child.stdout.take().map(|stdout| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.take(MAX_IP_OUTPUT + 1).read_to_end(&mut buf);
            buf
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let output = reader?.join().ok()?;
    if !status?.success() || output.len() as u64 > MAX_IP_OUTPUT {
        return None;
    }
    Some(String::from_utf8_lossy(&output).into_owned())
}

/// `/proc/net/arp` under `proc_root`; nothing if it cannot be read.
fn read_arp(proc_root: &Path) -> Vec<Neighbour> {
    match std::fs::read(proc_root.join("net").join("arp")) {
        Ok(bytes) => parse_arp(&String::from_utf8_lossy(&bytes)),
        Err(_) => Vec::new(),
    }
}

/// [`read`] with the `ip` to run given (`None`: as if it were not installed).
fn read_with(proc_root: &Path, ip: Option<&Path>, timeout: Duration) -> Vec<Neighbour> {
    let run = |family: &str| {
        let ip = ip?;
        let text = run_with_timeout(ip, &[family, "neigh", "show"], timeout)?;
        Some(parse_ip_neigh(&text))
    };
    let mut out: Vec<Neighbour> = run("-4")
        .unwrap_or_else(|| read_arp(proc_root))
        .into_iter()
        .filter(|n| n.ip.is_ipv4())
        .collect();
    out.extend(
        run("-6")
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.ip.is_ipv6()),
    );
    out
}

/// The neighbour table: IPv4 entries, then IPv6 entries.
///
/// Both come from `ip -4 neigh show` and `ip -6 neigh show` when iproute2 is installed.
/// Without it (or if it fails or hangs) the IPv4 entries come from
/// `<proc_root>/net/arp`, and there are no IPv6 entries, as the kernel offers no file for
/// them. `ip` always reads the running kernel's table (of the agent's network namespace),
/// whatever `proc_root` is. Never fails and never panics: an unreadable table is empty.
pub fn read(proc_root: &Path) -> Vec<Neighbour> {
    read_with(proc_root, find_ip().as_deref(), IP_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A gateway, an address being resolved, a static entry, a proxy-ARP entry.
    const ARP: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
192.168.1.1      0x1         0x2         52:54:00:12:34:56     *        eth0
192.168.1.77     0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.5         0x1         0x6         02:FC:00:00:00:05     *        br-lan
192.168.1.200    0x1         0xc         00:00:00:00:00:00     *        eth0
";

    const IP4_NEIGH: &str = "\
192.168.1.1 dev eth0 lladdr 52:54:00:12:34:56 REACHABLE
192.168.1.23 dev wlan0 lladdr AC:DE:48:00:11:22 STALE 
10.0.0.9 dev eth0  FAILED
10.0.0.10 dev eth0 INCOMPLETE
172.17.0.2 dev docker0 lladdr 02:42:ac:11:00:02 used 12/12/7 probes 1 DELAY
10.0.0.1 dev br-lan lladdr 02:fc:00:00:00:05 proto static PERMANENT
";

    const IP6_NEIGH: &str = "\
fe80::1 dev eth0 lladdr 52:54:00:12:34:56 router STALE
2001:db8::42 dev eth0 lladdr 52:54:00:ab:cd:ef REACHABLE
fd00::1 dev eth0 FAILED 
fe80::2 dev eth1 lladdr 52:54:00:00:00:02 extern_learn NOARP
";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn n(addr: &str, mac: Option<&str>, interface: &str, state: &str) -> Neighbour {
        Neighbour {
            ip: ip(addr),
            mac: mac.map(str::to_string),
            interface: interface.into(),
            state: state.into(),
        }
    }

    #[test]
    fn proc_net_arp() {
        assert_eq!(
            parse_arp(ARP),
            [
                n("192.168.1.1", Some("52:54:00:12:34:56"), "eth0", "COMPLETE"),
                n("192.168.1.77", None, "eth0", "INCOMPLETE"),
                n("10.0.0.5", Some("02:fc:00:00:00:05"), "br-lan", "PERMANENT"),
                n("192.168.1.200", None, "eth0", "PROXY"),
            ]
        );
    }

    #[test]
    fn malformed_arp_rows_are_skipped() {
        let text = "\
192.168.1.1      0x1         0x2         52:54:00:12:34:56     *
192.168.1.999    0x1         0x2         52:54:00:12:34:56     *        eth0
fe80::1          0x1         0x2         52:54:00:12:34:56     *        eth0
192.168.1.2      1           0x2         52:54:00:12:34:56     *        eth0
192.168.1.3      0x1         0x2         52:54:00:12:34:56     *        eth0 extra
192.168.1.4      0x1         0xFFFFFFFFFF 52:54:00:12:34:56    *        eth0
   192.168.1.5   0x1         0x2         52:54:00:12:34:56     *        eth0\t
";
        assert_eq!(
            parse_arp(text),
            [n(
                "192.168.1.5",
                Some("52:54:00:12:34:56"),
                "eth0",
                "COMPLETE"
            )]
        );
    }

    #[test]
    fn ip_neigh_ipv4() {
        assert_eq!(
            parse_ip_neigh(IP4_NEIGH),
            [
                n(
                    "192.168.1.1",
                    Some("52:54:00:12:34:56"),
                    "eth0",
                    "REACHABLE"
                ),
                n("192.168.1.23", Some("ac:de:48:00:11:22"), "wlan0", "STALE"),
                n("10.0.0.9", None, "eth0", "FAILED"),
                n("10.0.0.10", None, "eth0", "INCOMPLETE"),
                n("172.17.0.2", Some("02:42:ac:11:00:02"), "docker0", "DELAY"),
                n("10.0.0.1", Some("02:fc:00:00:00:05"), "br-lan", "PERMANENT"),
            ]
        );
    }

    #[test]
    fn ip_neigh_ipv6() {
        assert_eq!(
            parse_ip_neigh(IP6_NEIGH),
            [
                n("fe80::1", Some("52:54:00:12:34:56"), "eth0", "STALE"),
                n(
                    "2001:db8::42",
                    Some("52:54:00:ab:cd:ef"),
                    "eth0",
                    "REACHABLE"
                ),
                n("fd00::1", None, "eth0", "FAILED"),
                n("fe80::2", Some("52:54:00:00:00:02"), "eth1", "NOARP"),
            ]
        );
    }

    #[test]
    fn odd_ip_neigh_lines() {
        let text = "\
Deleted 10.0.0.1 dev eth0 lladdr 52:54:00:12:34:56 STALE
10.0.0.2 dev eth0 lladdr
10.0.0.3 lladdr 52:54:00:12:34:56 PROBE
fe80::1 dev eth0 proxy

10.0.0.4 dev eth0 lladdr 52:54:00:12:34:56 REACHABLE STALE
";
        assert_eq!(
            parse_ip_neigh(text),
            [
                n("10.0.0.3", Some("52:54:00:12:34:56"), "", "PROBE"),
                n("fe80::1", None, "eth0", ""),
                n(
                    "10.0.0.4",
                    Some("52:54:00:12:34:56"),
                    "eth0",
                    "REACHABLE STALE"
                ),
            ]
        );
    }

    #[test]
    fn without_ip_the_arp_file_is_read() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("net")).expect("net");
        std::fs::write(dir.path().join("net/arp"), ARP).expect("arp");
        let want = parse_arp(ARP);
        assert_eq!(read_with(dir.path(), None, IP_TIMEOUT), want);
        // An `ip` that cannot be started counts as missing.
        let missing = Path::new("/nonexistent/sbin/ip");
        assert_eq!(read_with(dir.path(), Some(missing), IP_TIMEOUT), want);
        // No `ip` and no table: empty, no error.
        assert!(read_with(&dir.path().join("absent"), None, IP_TIMEOUT).is_empty());
    }

    #[test]
    fn a_command_that_fails_or_hangs_gives_nothing() {
        let started = Instant::now();
        let out = run_with_timeout(Path::new("sleep"), &["10"], Duration::from_millis(200));
        assert_eq!(out, None);
        assert!(started.elapsed() < Duration::from_secs(5), "killed in time");
        assert_eq!(
            run_with_timeout(Path::new("false"), &[], IP_TIMEOUT),
            None,
            "a non-zero exit"
        );
        assert_eq!(
            run_with_timeout(Path::new("echo"), &["10.0.0.1 dev eth0 FAILED"], IP_TIMEOUT)
                .as_deref(),
            Some("10.0.0.1 dev eth0 FAILED\n")
        );
    }

    /// The machine's own table, through `ip` if it is installed.
    #[test]
    fn real_table_reads_without_panicking() {
        let table = read(Path::new("/proc"));
        for neighbour in &table {
            if let Some(mac) = &neighbour.mac {
                assert_eq!(*mac, mac.to_ascii_lowercase());
            }
        }
        let v4 = table.iter().take_while(|n| n.ip.is_ipv4()).count();
        assert!(table[v4..].iter().all(|n| n.ip.is_ipv6()), "IPv4 first");
    }

    fn spliced() -> impl Strategy<Value = String> {
        crate::inventory::spliced_fixture_lines(&[ARP, IP4_NEIGH, IP6_NEIGH])
    }

    proptest! {
        #[test]
        fn parse_arp_never_panics(text in "(?s).{0,400}") {
            let _ = parse_arp(&text);
        }

        #[test]
        fn parse_ip_neigh_never_panics(text in "(?s).{0,400}") {
            let _ = parse_ip_neigh(&text);
        }

        #[test]
        fn damaged_lines_never_panic(line in spliced()) {
            for neighbour in parse_arp(&line) {
                prop_assert!(neighbour.ip.is_ipv4());
            }
            for neighbour in parse_ip_neigh(&line) {
                if let Some(mac) = neighbour.mac {
                    prop_assert_eq!(mac.clone(), mac.to_ascii_lowercase());
                }
            }
        }
    }
}
