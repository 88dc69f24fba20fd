//! `procnet`: the kernel's socket tables `/proc/net/{tcp,tcp6,udp,udp6}`, and which
//! process owns each socket (`/proc/<pid>/fd/*` → `socket:[INODE]`).
//!
//! A row of these tables (the layout is the same for TCP and UDP, IPv4 and IPv6):
//!
//! ```text
//!   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode …
//!    0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21871 …
//! ```
//!
//! Addresses are hex dumps of the kernel's `__be32` words printed as integers (`%08X`),
//! so each 32-bit word appears in *host* byte order: `0100007F` is 127.0.0.1 on a
//! little-endian machine. An IPv6 address is four such words. Ports are printed after
//! `ntohs`, so they read directly. Decoding therefore uses native byte order
//! ([`u32::to_ne_bytes`]), which is right on whatever machine produced the table, as long
//! as that is the machine reading it (a table captured on x86 decodes wrongly on a
//! big-endian host; the fixture tests say so).
//!
//! The tables are untrusted text as far as the parser is concerned (fixture trees, a
//! future kernel that adds a column): a row that does not parse is skipped, never a
//! panic, and columns after `inode` are ignored.
//!
//! On the live system (`/proc` itself) [`read_listening`] asks the kernel through
//! netlink `sock_diag` instead ([`sock_diag`]), which returns the same rows without
//! walking every established TCP connection; the tables stay the fallback (no
//! `AF_NETLINK` in a sandbox, a kernel without inet_diag) and what fixture trees hold.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take_while_m_n;
use nom::character::complete::{char, digit1, hex_digit1, space0, space1};
use nom::combinator::{map_res, opt, recognize};
use serde::{Deserialize, Serialize};

use super::sock_diag;

/// The live system's proc root: only there is netlink asked (a fixture tree is read).
const LIVE_PROC: &str = "/proc";

/// TCP's `LISTEN` state (`include/net/tcp_states.h`).
const TCP_LISTEN: u8 = 0x0A;
/// TCP's `CLOSE` state, which is what an unconnected UDP socket reports.
const TCP_CLOSE: u8 = 0x07;

/// The transport of a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One row of a socket table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Socket {
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's state number (`st`): TCP states for TCP; for UDP, 0x07 (`CLOSE`) when
    /// unconnected and 0x01 (`ESTABLISHED`) after `connect`.
    pub state: u8,
    /// The effective uid that created the socket.
    pub uid: u32,
    /// The socket's inode: the key to its owner in [`socket_owners`]. 0 for TCP
    /// `TIME_WAIT` rows, which no longer belong to any process.
    pub inode: u64,
}

impl Socket {
    /// Whether the socket accepts traffic from anyone: a TCP socket in `LISTEN`, or a UDP
    /// socket that is bound but not connected (state `CLOSE`, remote port 0). A connected
    /// UDP socket only talks to its peer, like an established TCP connection.
    pub fn is_listening(&self) -> bool {
        match self.protocol {
            Protocol::Tcp => self.state == TCP_LISTEN,
            Protocol::Udp => self.state == TCP_CLOSE && self.remote.port() == 0,
        }
    }
}

/// Exactly `n` hex digits as a number (the kernel pads every field, so a short field
/// means a row in another layout, not one to guess at).
fn fixed_hex(n: usize) -> impl FnMut(&str) -> IResult<&str, u32> {
    move |i| {
        map_res(take_while_m_n(n, n, |c: char| c.is_ascii_hexdigit()), |h| {
            u32::from_str_radix(h, 16)
        })
        .parse(i)
    }
}

/// One address word in host byte order, as the 4 bytes the kernel keeps in memory.
fn word(i: &str) -> IResult<&str, [u8; 4]> {
    let (i, w) = fixed_hex(8)(i)?;
    Ok((i, w.to_ne_bytes()))
}

fn ipv4(i: &str) -> IResult<&str, IpAddr> {
    let (i, w) = word(i)?;
    Ok((i, IpAddr::V4(Ipv4Addr::from(w))))
}

fn ipv6(i: &str) -> IResult<&str, IpAddr> {
    let (i, (a, b, c, d)) = (word, word, word, word).parse(i)?;
    let mut bytes = [0u8; 16];
    for (chunk, w) in bytes.chunks_exact_mut(4).zip([a, b, c, d]) {
        chunk.copy_from_slice(&w);
    }
    Ok((i, IpAddr::V6(Ipv6Addr::from(bytes))))
}

/// `ADDRESS:PORT`, the address in the width of the table's family.
fn endpoint(v6: bool) -> impl FnMut(&str) -> IResult<&str, SocketAddr> {
    move |i| {
        let (i, ip) = if v6 { ipv6(i)? } else { ipv4(i)? };
        let (i, _) = char(':')(i)?;
        let (i, port) = fixed_hex(4)(i)?;
        // Four hex digits always fit: the conversion cannot fail, but is not unwrapped.
        let port = u16::try_from(port).unwrap_or(0);
        Ok((i, SocketAddr::new(ip, port)))
    }
}

/// A decimal column.
fn decimal<T: std::str::FromStr>(i: &str) -> IResult<&str, T> {
    map_res(digit1, str::parse::<T>).parse(i)
}

/// `HEX:HEX` (the queue sizes, the timer columns), skipped.
fn hex_pair(i: &str) -> IResult<&str, ()> {
    let (i, _) = (hex_digit1, char(':'), hex_digit1).parse(i)?;
    Ok((i, ()))
}

/// One row; `None` for the header and anything else that is not a row of this family.
fn row(line: &str, protocol: Protocol, v6: bool) -> Option<Socket> {
    let mut parser = (
        (space0, digit1, char(':'), space1),
        endpoint(v6),
        space1,
        endpoint(v6),
        space1,
        fixed_hex(2),
        // tx_queue:rx_queue, tr:tm->when, retrnsmt
        (
            space1, hex_pair, space1, hex_pair, space1, hex_digit1, space1,
        ),
        decimal::<u32>,
        // timeout is printed signed (`%8d`)
        (space1, recognize((opt(char('-')), digit1)), space1),
        decimal::<u64>,
    );
    let result: IResult<&str, _> = parser.parse(line);
    let (rest, (_, local, _, remote, _, state, _, uid, _, inode)) = result.ok()?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    Some(Socket {
        protocol,
        local,
        remote,
        state: u8::try_from(state).ok()?,
        uid,
        inode,
    })
}

/// Every row of one table (`v6` for `tcp6`/`udp6`), in order. The header, blank lines and
/// malformed rows are skipped; this never panics, whatever the text.
pub fn parse_table(text: &str, protocol: Protocol, v6: bool) -> Vec<Socket> {
    text.lines()
        .filter_map(|line| row(line, protocol, v6))
        .collect()
}

/// An I/O error that names the file it is about (the kernel's message alone does not).
fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The listening sockets ([`Socket::is_listening`]) of the four tables under
/// `<proc_root>/net/`: TCP, then TCP over IPv6, UDP, UDP over IPv6.
///
/// A missing table is no error (a kernel without IPv6 has no `tcp6`); any other failure
/// to read one is. The tables are those of the reader's network namespace.
///
/// When `proc_root` is the live `/proc`, each protocol is asked of the kernel through
/// netlink `sock_diag` first (same rows, same order of families, far cheaper for TCP: see
/// [`sock_diag`]); if that fails, the tables are read, with a debug log.
pub fn read_listening(proc_root: &Path) -> io::Result<Vec<Socket>> {
    read_listening_via(proc_root, sock_diag::listening)
}

/// [`read_listening`] with the netlink dump given (tests make it fail).
fn read_listening_via(
    proc_root: &Path,
    dump: impl Fn(Protocol) -> io::Result<Vec<Socket>>,
) -> io::Result<Vec<Socket>> {
    let live = proc_root == Path::new(LIVE_PROC);
    let mut out = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        if live {
            match dump(protocol) {
                Ok(sockets) => {
                    out.extend(sockets);
                    continue;
                }
                Err(e) => {
                    // Once per run at warning level: the fallback works but costs far
                    // more CPU per cycle (see sock_diag).
                    static WARNED: std::sync::atomic::AtomicBool =
                        std::sync::atomic::AtomicBool::new(false);
                    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::debug!(error = %e, ?protocol, "sock_diag dump failed, reading /proc/net instead");
                    } else {
                        tracing::warn!(error = %e, ?protocol, "sock_diag dump failed, reading /proc/net instead (slower)");
                    }
                }
            }
        }
        out.extend(read_tables(proc_root, protocol)?);
    }
    Ok(out)
}

/// The listening sockets of one protocol's two tables (`tcp` and `tcp6`, or `udp` and
/// `udp6`) under `<proc_root>/net/`.
pub(super) fn read_tables(proc_root: &Path, protocol: Protocol) -> io::Result<Vec<Socket>> {
    let names = match protocol {
        Protocol::Tcp => ["tcp", "tcp6"],
        Protocol::Udp => ["udp", "udp6"],
    };
    let mut out = Vec::new();
    for (name, v6) in names.into_iter().zip([false, true]) {
        let path = proc_root.join("net").join(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(with_path(&path, e)),
        };
        // The kernel writes ASCII; a damaged fixture is parsed as far as it goes.
        let text = String::from_utf8_lossy(&bytes);
        out.extend(
            parse_table(&text, protocol, v6)
                .into_iter()
                .filter(Socket::is_listening),
        );
    }
    Ok(out)
}

/// The inode of a `socket:[INODE]` link target.
pub(super) fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Which process holds each socket: inode → pid, from the links `<proc_root>/<pid>/fd/*`
/// that point at `socket:[INODE]`.
///
/// Processes whose descriptors cannot be read (another user's without privilege, or a
/// process that exited while being read) are skipped, so without root the map holds only
/// the reader's own processes. A socket shared by several processes (inherited across
/// `fork`) maps to the lowest pid, usually the parent, so the answer does not depend on
/// directory order.
pub fn socket_owners(proc_root: &Path) -> HashMap<u64, u32> {
    let mut owners: HashMap<u64, u32> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|t| socket_inode(&t))
            else {
                continue;
            };
            owners
                .entry(inode)
                .and_modify(|p| *p = (*p).min(pid))
                .or_insert(pid);
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Captured on x86-64 (little-endian), trimmed to the interesting rows: CUPS on
    /// 127.0.0.1:631, sshd on 0.0.0.0:22, an established SSH session, a TIME_WAIT row.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21871 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19573 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:0016 0202000A:C8D4 01 00000000:00000000 02:00097B1C 00000000     0        0 48213 4 0000000000000000 20 4 31 10 -1
   3: 0F02000A:9A3C 2E1A5D8E:01BB 06 00000000:00000000 03:00001562 00000000     0        0 0 3 0000000000000000
";

    /// PostgreSQL on [::1]:5432, sshd on [::]:22, an IPv4-mapped established connection.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   114        0 23911 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19575 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1538 0000000000000000FFFF00000100007F:D2F0 01 00000000:00000000 00:00000000 00000000   114        0 51002 1 0000000000000000 20 4 30 10 -1
";

    /// dhclient on 0.0.0.0:68, avahi on 0.0.0.0:5353, a connected socket (DNS query).
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  276: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 17032 2 0000000000000000 0
  891: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   107        0 18220 2 0000000000000000 0
 1203: 0F02000A:B6F1 0302000A:0035 01 00000000:00000000 00:00000000 00000000  1000        0 52117 2 0000000000000000 0
";

    /// A link-local IPv6 listener (DHCPv6 client on [fe80::5054:ff:fe12:3456]:546).
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  512: 000080FE00000000FF005450563412FE:0222 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 19011 2 0000000000000000 0
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_tcp_rows() {
        let rows = parse_table(TCP, Protocol::Tcp, false);
        assert_eq!(rows.len(), 4, "header skipped, every row kept");
        assert_eq!(
            rows[0],
            Socket {
                protocol: Protocol::Tcp,
                local: addr("127.0.0.1:631"),
                remote: addr("0.0.0.0:0"),
                state: 0x0A,
                uid: 0,
                inode: 21871,
            }
        );
        assert!(rows[0].is_listening());
        assert_eq!(rows[1].local, addr("0.0.0.0:22"));
        assert!(rows[1].is_listening());
        // The established session is not listening, even though its local port is 22.
        assert_eq!(rows[2].local, addr("10.0.2.15:22"));
        assert_eq!(rows[2].remote, addr("10.0.2.2:51412"));
        assert_eq!(rows[2].state, 0x01);
        assert!(!rows[2].is_listening());
        // TIME_WAIT: inode 0, owned by nobody.
        assert_eq!(rows[3].remote, addr("142.93.26.46:443"));
        assert_eq!((rows[3].state, rows[3].inode), (0x06, 0));
        assert!(!rows[3].is_listening());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_tcp_rows() {
        let rows = parse_table(TCP6, Protocol::Tcp, true);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].local, addr("[::1]:5432"));
        assert_eq!((rows[0].uid, rows[0].inode), (114, 23911));
        assert!(rows[0].is_listening());
        assert_eq!(rows[1].local, addr("[::]:22"));
        assert_eq!(rows[2].local, addr("[::ffff:127.0.0.1]:5432"));
        assert_eq!(rows[2].remote, addr("[::ffff:127.0.0.1]:54000"));
        assert!(!rows[2].is_listening());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn udp_rows_bound_versus_connected() {
        let rows = parse_table(UDP, Protocol::Udp, false);
        assert_eq!(rows.len(), 3, "a wide `sl` column still parses");
        assert_eq!(rows[0].local, addr("0.0.0.0:68"));
        assert!(rows[0].is_listening());
        assert_eq!((rows[1].local.port(), rows[1].uid), (5353, 107));
        assert!(rows[1].is_listening());
        assert_eq!(rows[2].remote, addr("10.0.2.3:53"));
        assert!(!rows[2].is_listening(), "a connected UDP socket");

        let rows = parse_table(UDP6, Protocol::Udp, true);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].local, addr("[fe80::5054:ff:fe12:3456]:546"));
        assert!(rows[0].is_listening());
    }

    #[test]
    fn a_udp_socket_in_state_close_with_a_peer_port_is_not_listening() {
        let socket = Socket {
            protocol: Protocol::Udp,
            local: addr("0.0.0.0:5000"),
            remote: addr("10.0.0.1:53"),
            state: TCP_CLOSE,
            uid: 0,
            inode: 1,
        };
        assert!(!socket.is_listening());
    }

    #[test]
    fn malformed_rows_and_the_wrong_family_are_skipped() {
        let text = "\
   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21871
   1: 0100007F:0277 00000000:0000 0A
   2: 0100007:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21871
   3: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99999999999999999999999
   4: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123abc

garbage
";
        let rows = parse_table(text, Protocol::Tcp, false);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].inode, 21871);
        assert!(parse_table(text, Protocol::Tcp, true).is_empty());
        assert!(parse_table(TCP6, Protocol::Tcp, false).is_empty());
        assert!(parse_table(TCP, Protocol::Tcp, true).is_empty());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn fixture_tree_listening_sockets_and_their_owners() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        std::fs::create_dir_all(root.join("net")).expect("net dir");
        // No tcp6/udp6: a kernel without IPv6.
        let tcp = TCP.replace(" 21871 ", " 12345 ");
        std::fs::write(root.join("net/tcp"), tcp).expect("tcp");
        std::fs::write(root.join("net/udp"), UDP).expect("udp");

        let listening = read_listening(root).expect("read_listening");
        let locals: Vec<String> = listening.iter().map(|s| s.local.to_string()).collect();
        assert_eq!(
            locals,
            ["127.0.0.1:631", "0.0.0.0:22", "0.0.0.0:68", "0.0.0.0:5353"]
        );
        assert!(listening.iter().all(Socket::is_listening));

        // pid 1234 holds the CUPS socket on fd 3; fd 4 is a file, fd 5 a pipe.
        let fd = root.join("1234/fd");
        std::fs::create_dir_all(&fd).expect("fd dir");
        std::os::unix::fs::symlink("socket:[12345]", fd.join("3")).expect("symlink");
        std::os::unix::fs::symlink("/var/log/cups/access_log", fd.join("4")).expect("symlink");
        std::os::unix::fs::symlink("pipe:[777]", fd.join("5")).expect("symlink");
        // A forked child shares the socket: the parent (lower pid) is named.
        let child = root.join("1240/fd");
        std::fs::create_dir_all(&child).expect("fd dir");
        std::os::unix::fs::symlink("socket:[12345]", child.join("3")).expect("symlink");
        std::os::unix::fs::symlink("socket:[17032]", child.join("7")).expect("symlink");
        // Not pids, or without readable descriptors: skipped.
        std::fs::create_dir_all(root.join("self/fd")).expect("self");
        std::fs::create_dir_all(root.join("99")).expect("pid without fd");

        let owners = socket_owners(root);
        assert_eq!(owners.len(), 2, "{owners:?}");
        assert_eq!(owners.get(&12345), Some(&1234));
        assert_eq!(owners.get(&17032), Some(&1240));
        let cups = listening
            .iter()
            .find(|s| s.local.port() == 631)
            .expect("cups");
        assert_eq!(owners.get(&cups.inode), Some(&1234));
    }

    #[test]
    fn a_missing_tree_has_no_listeners_and_no_owners() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(read_listening(dir.path()).expect("no tables").is_empty());
        assert!(socket_owners(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn an_unreadable_table_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        // A directory where the table should be: reading it fails, not with NotFound.
        std::fs::create_dir_all(dir.path().join("net/tcp")).expect("dir");
        let err = read_listening(dir.path()).expect_err("a directory is not a table");
        assert!(err.to_string().contains("net/tcp"), "{err}");
    }

    /// The machine's own sockets (through netlink on the live `/proc`): a listener bound
    /// here is found, with its owner.
    #[test]
    fn real_proc_shows_a_fresh_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().expect("local addr");
        let proc_root = Path::new("/proc");
        let listening = read_listening(proc_root).expect("read /proc/net");
        let socket = listening
            .iter()
            .find(|s| s.protocol == Protocol::Tcp && s.local == local)
            .unwrap_or_else(|| panic!("{local} not among {listening:?}"));
        assert!(socket.is_listening());
        let owners = socket_owners(proc_root);
        assert_eq!(owners.get(&socket.inode), Some(&std::process::id()));
    }

    /// When netlink fails on the live system, the tables are read; a fixture tree is read
    /// without asking netlink at all.
    #[test]
    fn a_failing_netlink_dump_falls_back_to_the_tables() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().expect("local addr");
        let asked = std::cell::Cell::new(0);
        let failing = |_| {
            asked.set(asked.get() + 1);
            Err(io::Error::other("no inet_diag here"))
        };
        let listening = read_listening_via(Path::new("/proc"), failing).expect("tables");
        assert_eq!(asked.get(), 2, "TCP and UDP asked, both failed");
        assert!(listening.iter().any(|s| s.local == local), "{listening:?}");

        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("net")).expect("net dir");
        std::fs::write(dir.path().join("net/udp"), UDP).expect("udp");
        let read = read_listening_via(dir.path(), failing).expect("fixture");
        assert_eq!(read.len(), 2, "{read:?}");
        assert_eq!(asked.get(), 2, "a fixture root never asks netlink");
    }

    fn spliced() -> impl Strategy<Value = String> {
        crate::inventory::spliced_fixture_lines(&[TCP, TCP6, UDP, UDP6])
    }

    proptest! {
        #[test]
        fn parse_table_never_panics_on_arbitrary_text(text in "(?s).{0,400}", v6 in any::<bool>()) {
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                let _ = parse_table(&text, protocol, v6);
            }
        }

        #[test]
        fn parse_table_never_panics_on_damaged_rows(line in spliced(), v6 in any::<bool>()) {
            for socket in parse_table(&line, Protocol::Udp, v6) {
                prop_assert_eq!(socket.local.is_ipv6(), v6);
            }
        }
    }
}
