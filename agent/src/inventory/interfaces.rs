//! `interfaces`: the machine's network interfaces — name, MAC address, state, MTU, link
//! type, physical or virtual — and the IP addresses (IPv4 and IPv6) on each.
//!
//! Two sources:
//!
//! * `<sys>/class/net/<name>/`, one directory (a symlink into `/sys/devices/…`) per
//!   interface of the agent's network namespace: `address` (the MAC), `operstate`, `mtu`,
//!   `type` (the `ARPHRD_*` link type), `addr_assign_type` (whether the MAC is the
//!   hardware's or was set by software), `uevent` (`DEVTYPE`: `wlan`, `bridge`, `vlan`,
//!   …) and `device`, a link to the bus device that only hardware interfaces have. This
//!   is the list of interfaces; it is read under a root so tests use fixture trees.
//! * The addresses, from `getifaddrs(3)` through the `if-addrs` crate (the kernel's
//!   netlink answer; `unsafe` stays in that crate). sysfs has no addresses, and the
//!   `/proc` alternatives are poor: `/proc/net/if_inet6` is IPv6 only, and IPv4
//!   addresses appear only in `/proc/net/fib_trie`, a routing-table dump that names no
//!   interface. Addresses always come from the running kernel, whatever the root; they
//!   are attached only to interfaces found in sysfs, so a fixture tree gets addresses
//!   only if it names a real interface.
//!
//! Everything an interface reports is optional: an attribute that is missing, unreadable
//! or malformed is `None`, never an error, and an interface that vanishes while being
//! read (a container's veth going away) is simply not listed.
//!
//! Cost: each sysfs attribute is an open, a read and a close (about 25 µs each on the
//! 2-core test VM, so some 120 µs per interface read in full), which a host with hundreds
//! of veths would pay every diff cycle. [`read_since`], the diff's reader, therefore reads
//! only `address` of an interface it already knows, and reads one in full only when it is
//! new or its MAC or addresses changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetInterface {
    pub name: String,
    /// The link-layer address, lower case with colons (`52:54:00:12:34:56`, as the
    /// neighbour table has it); `None` if the interface has none (tun, WireGuard) or it
    /// is all zeroes (loopback).
    pub mac: Option<String>,
    /// How the MAC was assigned (`addr_assign_type`): `permanent` (the hardware's),
    /// `random`, `stolen` (from another device: bonds, VLANs) or `set` (by software —
    /// worth a look on a physical interface).
    pub mac_assignment: Option<String>,
    /// `operstate` (RFC 2863): `up`, `down`, `dormant`, `lowerlayerdown`, `notpresent`,
    /// `testing` or `unknown` (loopback and many virtual interfaces say `unknown`).
    pub operstate: Option<String>,
    pub mtu: Option<u32>,
    /// The link type (`ARPHRD_*`) by name (`ether`, `loopback`, `none` for tun and
    /// WireGuard, …), or its number when it has no name here.
    pub link_type: Option<String>,
    /// `DEVTYPE` from `uevent`: `wlan`, `bridge`, `vlan`, `bond`, `wireguard`, … (plain
    /// Ethernet devices and loopback have none).
    pub kind: Option<String>,
    /// Whether the interface is backed by a device on a bus (a `device` link): a NIC, not
    /// a bridge, veth, tunnel or loopback. A new physical interface is new hardware.
    pub physical: bool,
    /// The interface's addresses with their prefix length, sorted, without duplicates.
    pub addresses: Vec<IpNet>,
}

/// An attribute file's trimmed text; `None` if missing, unreadable, empty or not UTF-8.
fn attribute(dir: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(dir.join(name)).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The name of an `ARPHRD_*` link type (`include/uapi/linux/if_arp.h`); the number itself
/// for the rarer ones.
fn link_type_name(number: &str) -> String {
    let name = match number {
        "1" => "ether",
        "24" => "ieee1394",
        "32" => "infiniband",
        "280" => "can",
        "512" => "ppp",
        "768" => "ipip",
        "769" => "tunnel6",
        "772" => "loopback",
        "776" => "sit",
        "778" => "gre",
        "801" => "ieee80211",
        "803" => "ieee80211_radiotap",
        "823" => "ip6gre",
        "824" => "netlink",
        "65534" => "none",
        other => return other.to_string(),
    };
    name.to_string()
}

/// `addr_assign_type` by name (`NET_ADDR_*`).
fn mac_assignment_name(number: &str) -> String {
    match number {
        "0" => "permanent",
        "1" => "random",
        "2" => "stolen",
        "3" => "set",
        other => other,
    }
    .to_string()
}

/// A MAC address as the kernel prints it, lower-cased; `None` when all zeroes.
fn normalise_mac(text: &str) -> Option<String> {
    let mac = text.to_ascii_lowercase();
    let is_hex_pairs = mac
        .split(':')
        .all(|octet| octet.len() == 2 && octet.bytes().all(|b| b.is_ascii_hexdigit()));
    if !is_hex_pairs || mac.bytes().all(|b| b == b'0' || b == b':') {
        return None;
    }
    Some(mac)
}

/// One directory of `class/net`; `None` if it is not a directory (`bonding_masters` is a
/// file there) or has gone.
fn interface(dir: &Path, name: &str) -> Option<NetInterface> {
    if !dir.is_dir() {
        return None;
    }
    let kind = attribute(dir, "uevent").and_then(|uevent| {
        uevent.lines().find_map(|l| {
            l.strip_prefix("DEVTYPE=")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        })
    });
    Some(NetInterface {
        name: name.to_string(),
        mac: attribute(dir, "address").and_then(|a| normalise_mac(&a)),
        mac_assignment: attribute(dir, "addr_assign_type").map(|a| mac_assignment_name(&a)),
        operstate: attribute(dir, "operstate"),
        mtu: attribute(dir, "mtu").and_then(|m| m.parse().ok()),
        link_type: attribute(dir, "type").map(|t| link_type_name(&t)),
        kind,
        physical: dir.join("device").exists(),
        addresses: Vec::new(),
    })
}

/// The interfaces under `<sys_root>/class/net`, sorted by name, each with its addresses
/// from `addresses` (by interface name, as [`read_addresses`] gives them). Nothing if the
/// directory cannot be listed.
pub fn read_with(sys_root: &Path, addresses: &BTreeMap<String, Vec<IpNet>>) -> Vec<NetInterface> {
    read_since_with(sys_root, addresses, &BTreeMap::new())
}

/// [`read_with`], taking from `previous` (by name) every interface whose MAC and addresses
/// are unchanged instead of reading it in full: for those only `address` is read. What is
/// taken keeps the state, MTU, … it had when last read in full; the diff reports MAC and
/// address changes only, and every change event is of an interface read just now.
pub fn read_since_with(
    sys_root: &Path,
    addresses: &BTreeMap<String, Vec<IpNet>>,
    previous: &BTreeMap<String, NetInterface>,
) -> Vec<NetInterface> {
    let dir = sys_root.join("class").join("net");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let no_addresses = Vec::new();
    let mut interfaces: Vec<NetInterface> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            let path = entry.path();
            let found = addresses.get(name).unwrap_or(&no_addresses);
            if let Some(old) = previous.get(name) {
                // An `address` that cannot be read (the interface is going) is a change:
                // the full read below then leaves the interface out.
                let mac = std::fs::read(path.join("address"))
                    .ok()
                    .map(|bytes| normalise_mac(String::from_utf8_lossy(&bytes).trim()));
                if mac.as_ref() == Some(&old.mac) && *found == old.addresses {
                    return Some(old.clone());
                }
            }
            let mut interface = interface(&path, name)?;
            interface.addresses.clone_from(found);
            Some(interface)
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces
}

/// Groups `(label, address, prefix length)` triples by interface, sorted and deduplicated.
///
/// An IPv4 address added with a label (`ip addr add … label eth0:1`, the old alias
/// style) is reported under its label; the kernel forbids `:` in interface names, so
/// what precedes it is the interface.
pub fn group_addresses(
    found: impl IntoIterator<Item = (String, IpAddr, u8)>,
) -> BTreeMap<String, Vec<IpNet>> {
    let mut by_name: BTreeMap<String, BTreeSet<IpNet>> = BTreeMap::new();
    for (label, ip, prefix) in found {
        let name = label.split(':').next().unwrap_or(&label).to_string();
        // A prefix longer than the address cannot come from the kernel; keep the address.
        let net = IpNet::new(ip, prefix).unwrap_or_else(|_| IpNet::from(ip));
        by_name.entry(name).or_default().insert(net);
    }
    by_name
        .into_iter()
        .map(|(name, set)| (name, set.into_iter().collect()))
        .collect()
}

/// The running kernel's interface addresses (IPv4 and IPv6, link-local included), by
/// interface name; nothing if `getifaddrs` fails.
pub fn read_addresses() -> BTreeMap<String, Vec<IpNet>> {
    let Ok(found) = if_addrs::get_if_addrs() else {
        return BTreeMap::new();
    };
    group_addresses(found.into_iter().map(|i| {
        let prefix = match &i.addr {
            if_addrs::IfAddr::V4(v4) => v4.prefixlen,
            if_addrs::IfAddr::V6(v6) => v6.prefixlen,
        };
        (i.name.clone(), i.ip(), prefix)
    }))
}

/// The interfaces under `<sys_root>/class/net` with the running kernel's addresses. Never
/// fails and never panics: what cannot be read is left out.
pub fn read(sys_root: &Path) -> Vec<NetInterface> {
    read_with(sys_root, &read_addresses())
}

/// [`read`] for a diff cycle: interfaces in `previous` whose MAC and addresses did not
/// change are not read again (see [`read_since_with`]).
pub fn read_since(sys_root: &Path, previous: &BTreeMap<String, NetInterface>) -> Vec<NetInterface> {
    read_since_with(sys_root, &read_addresses(), previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, attributes: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).expect("dir");
        for (name, value) in attributes {
            std::fs::write(dir.join(name), format!("{value}\n")).expect("attribute");
        }
    }

    /// An interface directory under `devices/…`, linked from `class/net/<name>` as sysfs
    /// does; `bus_device` adds the `device` link of a hardware interface.
    fn add(sys: &Path, real: &str, name: &str, attributes: &[(&str, &str)], bus_device: bool) {
        let dir = sys.join("devices").join(real).join("net").join(name);
        write(&dir, attributes);
        if bus_device {
            std::os::unix::fs::symlink(sys.join("devices").join(real), dir.join("device"))
                .expect("device link");
        }
        let links = sys.join("class/net");
        std::fs::create_dir_all(&links).expect("class/net");
        std::os::unix::fs::symlink(&dir, links.join(name)).expect("symlink");
    }

    /// Loopback, a NIC whose MAC was set by software, a Wi-Fi card, a WireGuard tunnel
    /// without a MAC, a bridge, the `bonding_masters` file, and a broken link.
    fn fixture() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tmp");
        let sys = tmp.path();
        add(
            sys,
            "virtual",
            "lo",
            &[
                ("address", "00:00:00:00:00:00"),
                ("addr_assign_type", "0"),
                ("operstate", "unknown"),
                ("mtu", "65536"),
                ("type", "772"),
                ("uevent", "INTERFACE=lo\nIFINDEX=1"),
            ],
            false,
        );
        add(
            sys,
            "pci0000:00/0000:00:03.0/virtio2",
            "eth0",
            &[
                ("address", "52:54:00:AB:CD:EF"),
                ("addr_assign_type", "3"),
                ("operstate", "up"),
                ("mtu", "1500"),
                ("type", "1"),
                ("uevent", "INTERFACE=eth0\nIFINDEX=2"),
            ],
            true,
        );
        add(
            sys,
            "pci0000:00/0000:00:14.3",
            "wlp0s20f3",
            &[
                ("address", "ac:de:48:00:11:22"),
                ("addr_assign_type", "0"),
                ("operstate", "dormant"),
                ("mtu", "1500"),
                ("type", "1"),
                ("uevent", "DEVTYPE=wlan\nINTERFACE=wlp0s20f3\nIFINDEX=3"),
            ],
            true,
        );
        add(
            sys,
            "virtual",
            "wg0",
            &[
                ("address", ""),
                ("operstate", "unknown"),
                ("mtu", "not a number"),
                ("type", "65534"),
                ("uevent", "DEVTYPE=wireguard\nINTERFACE=wg0"),
            ],
            false,
        );
        add(
            sys,
            "virtual",
            "br0",
            &[
                ("address", "02:42:AC:11:00:01"),
                ("addr_assign_type", "1"),
                ("operstate", "down"),
                ("type", "9999"),
                ("uevent", "DEVTYPE=bridge\nINTERFACE=br0"),
            ],
            false,
        );
        write(&sys.join("class/net"), &[("bonding_masters", "bond0")]);
        std::os::unix::fs::symlink(
            sys.join("devices/virtual/net/gone"),
            sys.join("class/net/gone"),
        )
        .expect("dangling link");
        tmp
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn fixture_tree_interfaces() {
        let tmp = fixture();
        let addresses = group_addresses([
            ("eth0".to_string(), "192.0.2.10".parse().expect("ip"), 24),
            ("eth0:1".to_string(), "192.0.2.11".parse().expect("ip"), 24),
            ("eth0".to_string(), "2001:db8::10".parse().expect("ip"), 64),
            ("eth0".to_string(), "192.0.2.10".parse().expect("ip"), 24),
            ("lo".to_string(), "127.0.0.1".parse().expect("ip"), 8),
            ("lo".to_string(), "::1".parse().expect("ip"), 200),
            ("docker0".to_string(), "172.17.0.1".parse().expect("ip"), 16),
        ]);
        let interfaces = read_with(tmp.path(), &addresses);
        let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["br0", "eth0", "lo", "wg0", "wlp0s20f3"],
            "sorted; the bonding_masters file, the dangling link and docker0 (addresses only) left out"
        );

        let eth0 = &interfaces[1];
        assert_eq!(
            eth0.mac.as_deref(),
            Some("52:54:00:ab:cd:ef"),
            "lower-cased"
        );
        assert_eq!(eth0.mac_assignment.as_deref(), Some("set"));
        assert_eq!(eth0.operstate.as_deref(), Some("up"));
        assert_eq!(eth0.mtu, Some(1500));
        assert_eq!(eth0.link_type.as_deref(), Some("ether"));
        assert_eq!(eth0.kind, None);
        assert!(eth0.physical);
        assert_eq!(
            eth0.addresses,
            [
                net("192.0.2.10/24"),
                net("192.0.2.11/24"),
                net("2001:db8::10/64")
            ],
            "the eth0:1 label is eth0's; the duplicate once"
        );

        let lo = &interfaces[2];
        assert_eq!(lo.mac, None, "all zeroes is no MAC");
        assert_eq!(lo.link_type.as_deref(), Some("loopback"));
        assert!(!lo.physical);
        assert_eq!(
            lo.addresses,
            [net("127.0.0.1/8"), net("::1/128")],
            "an impossible prefix keeps the address"
        );

        let wg0 = &interfaces[3];
        assert_eq!((wg0.mac.as_deref(), wg0.mtu), (None, None));
        assert_eq!(wg0.link_type.as_deref(), Some("none"));
        assert_eq!(wg0.kind.as_deref(), Some("wireguard"));
        assert_eq!(wg0.mac_assignment, None);

        let wifi = &interfaces[4];
        assert_eq!(wifi.kind.as_deref(), Some("wlan"));
        assert_eq!(wifi.mac_assignment.as_deref(), Some("permanent"));
        assert!(wifi.physical && wifi.addresses.is_empty());

        let br0 = &interfaces[0];
        assert_eq!(
            br0.link_type.as_deref(),
            Some("9999"),
            "an unnamed type by number"
        );
        assert_eq!(br0.mac.as_deref(), Some("02:42:ac:11:00:01"));
        assert_eq!(br0.mac_assignment.as_deref(), Some("random"));
        assert!(!br0.physical);
    }

    /// A diff cycle reads only `address` of known interfaces: an unchanged one is taken
    /// from before (a state change alone is not seen), a changed MAC or address makes a
    /// full read, a new interface is read, a gone one is left out.
    #[test]
    fn read_since_reads_in_full_only_what_changed() {
        let tmp = fixture();
        let sys = tmp.path();
        let addresses = group_addresses([
            ("eth0".to_string(), "192.0.2.10".parse().expect("ip"), 24),
            ("wg0".to_string(), "10.8.0.2".parse().expect("ip"), 24),
        ]);
        let first: BTreeMap<String, NetInterface> = read_with(sys, &addresses)
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        let eth0 = sys.join("devices/pci0000:00/0000:00:03.0/virtio2/net/eth0");
        let br0 = sys.join("devices/virtual/net/br0");
        // Not diffed: br0 goes up, lo's MTU changes.
        std::fs::write(br0.join("operstate"), "up\n").expect("operstate");
        std::fs::write(sys.join("devices/virtual/net/lo/mtu"), "1500\n").expect("mtu");
        // Diffed: eth0's MAC changes (and its state, read with it); wg0 gets an address.
        std::fs::write(eth0.join("address"), "de:ad:be:ef:00:01\n").expect("address");
        std::fs::write(eth0.join("operstate"), "down\n").expect("operstate");
        add(sys, "virtual", "tun0", &[("type", "65534")], false);
        std::fs::remove_file(sys.join("class/net/wlp0s20f3")).expect("unlink");
        let mut addresses = addresses;
        addresses
            .entry("wg0".into())
            .or_default()
            .push(net("fd00::2/64"));

        let now = read_since_with(sys, &addresses, &first);
        let names: Vec<&str> = now.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["br0", "eth0", "lo", "tun0", "wg0"]);
        assert_eq!(now[0], first["br0"], "taken from before");
        assert_eq!(now[2].mtu, Some(65536), "taken from before");
        assert_eq!(now[1].mac.as_deref(), Some("de:ad:be:ef:00:01"));
        assert_eq!(now[1].operstate.as_deref(), Some("down"), "read in full");
        assert_eq!(now[1].addresses, [net("192.0.2.10/24")]);
        assert_eq!(now[3].link_type.as_deref(), Some("none"));
        assert_eq!(now[4].addresses, [net("10.8.0.2/24"), net("fd00::2/64")]);

        // The same tree in full: identical but for what a diff does not look at.
        let full = read_with(sys, &addresses);
        assert_eq!(full[1], now[1]);
        assert_eq!(full[0].operstate.as_deref(), Some("up"));
    }

    #[test]
    fn no_class_net_is_no_interfaces() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(read(tmp.path()).is_empty());
    }

    #[test]
    fn macs() {
        assert_eq!(
            normalise_mac("AA:bb:CC:00:11:22").as_deref(),
            Some("aa:bb:cc:00:11:22")
        );
        assert_eq!(normalise_mac("00:00:00:00:00:00"), None);
        assert_eq!(normalise_mac("not a mac"), None);
        assert_eq!(normalise_mac("aa:bb:c"), None);
        // IPoIB: 20 octets.
        let ib = "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0f:d2:a1";
        assert_eq!(normalise_mac(ib).as_deref(), Some(ib));
    }

    /// On this machine: loopback is there, with 127.0.0.1.
    #[test]
    fn real_loopback_has_127_0_0_1() {
        let interfaces = read(Path::new("/sys"));
        let lo = interfaces
            .iter()
            .find(|i| i.name == "lo")
            .expect("lo in /sys/class/net");
        assert!(
            lo.addresses.contains(&net("127.0.0.1/8")),
            "{:?}",
            lo.addresses
        );
        assert_eq!(lo.link_type.as_deref(), Some("loopback"));
        assert!(!lo.physical);
        assert_eq!(lo.mac, None);
    }
}
