//! The inventory as a stream: a full snapshot (every item, `event.kind: state`) at start
//! and every `snapshot_interval_minutes`, and in between a cheap diff every
//! `diff_interval_seconds` whose changes are events (`event.kind: event`): process
//! started or exited, port opened or closed, USB device attached or removed, user added
//! or removed, neighbour appeared or changed its MAC, network interface added, removed or
//! changed (an address added or removed, its MAC changed). All under `event.dataset:
//! yagura.inventory`, so the collector can rebuild what a host looked like at any time.
//!
//! A diff reads only the fast-changing tables (processes, sockets, USB, users,
//! neighbours, interfaces — the last a few small sysfs files per interface and one
//! `getifaddrs`); packages, groups, mounts, disks and host facts come with snapshots.
//! Executables are hashed once per (device, inode, size, times) by the [`ExeHasher`]
//! cache.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;
use yagura_shared::Event;

use super::accounts::{self, User};
use super::interfaces::{self, NetInterface};
use super::mounts::{self, Disk, Mount};
use super::neighbours::{self, Neighbour};
use super::packages;
use super::processes::{self, ExeHasher, Process};
use super::procnet::{self, Protocol};
use super::usb::{self, UsbDevice};
use crate::tail::EventContext;

/// The dataset of inventory events.
pub const INVENTORY_DATASET: &str = "yagura.inventory";

/// Where the tables are read from (a fixture tree in tests).
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub etc: PathBuf,
    /// The filesystem root (package databases).
    pub root: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            etc: PathBuf::from("/etc"),
            root: PathBuf::from("/"),
        }
    }
}

/// A listening socket with its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub protocol: Protocol,
    pub local: SocketAddr,
    /// The socket's inode (a new socket on the same address is another inode).
    pub inode: u64,
    pub pid: Option<u32>,
    pub process: Option<String>,
}

/// What one diff cycle observes, keyed so two observations compare item by item.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// By (pid, start time): a reused pid is another process.
    pub processes: BTreeMap<(u32, u64), Process>,
    pub ports: BTreeMap<(String, SocketAddr), Port>,
    pub usb: BTreeMap<String, UsbDevice>,
    pub users: BTreeMap<String, User>,
    pub neighbours: BTreeMap<IpAddr, Neighbour>,
    /// By interface name.
    pub interfaces: BTreeMap<String, NetInterface>,
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Reads the diffable tables.
pub fn observe(roots: &Roots, hasher: &mut ExeHasher) -> Observed {
    observe_since(roots, hasher, None)
}

/// [`observe`], reusing what `previous` already knows: processes still running are not
/// read again, sockets' owners are looked up (a scan of every process's open files) only
/// when a listening socket is new, and interfaces are read in full only when new or when
/// their MAC or addresses changed. This is what keeps a diff cycle cheap.
pub fn observe_since(
    roots: &Roots,
    hasher: &mut ExeHasher,
    previous: Option<&Observed>,
) -> Observed {
    let users = accounts::read_users(&roots.etc).unwrap_or_default();
    let names = accounts::user_names(&users);
    let mut processes = BTreeMap::new();
    let read = match previous {
        Some(previous) => {
            processes::read_processes_reusing(&roots.proc, hasher, &previous.processes)
        }
        None => processes::read_processes(&roots.proc, hasher),
    };
    for mut process in read {
        process.user = names.get(&process.uid).cloned();
        processes.insert((process.pid, process.start_ticks), process);
    }
    let by_pid: BTreeMap<u32, String> = processes
        .values()
        .map(|p| (p.pid, p.name.clone()))
        .collect();
    let listening = procnet::read_listening(&roots.proc).unwrap_or_default();
    let known: std::collections::HashMap<u64, Option<u32>> = previous
        .map(|p| {
            p.ports
                .values()
                .map(|port| (port.inode, port.pid))
                .collect()
        })
        .unwrap_or_default();
    let owners = if listening.iter().all(|s| known.contains_key(&s.inode)) {
        known
            .iter()
            .filter_map(|(inode, pid)| pid.map(|pid| (*inode, pid)))
            .collect()
    } else {
        procnet::socket_owners(&roots.proc)
    };
    let mut ports = BTreeMap::new();
    for socket in listening {
        let pid = owners.get(&socket.inode).copied();
        let port = Port {
            protocol: socket.protocol,
            local: socket.local,
            inode: socket.inode,
            pid,
            process: pid.and_then(|p| by_pid.get(&p).cloned()),
        };
        ports.insert(
            (protocol_name(socket.protocol).to_string(), socket.local),
            port,
        );
    }
    Observed {
        processes,
        ports,
        usb: usb::read_devices(&roots.sys)
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.bus_id.clone(), d))
            .collect(),
        users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
        neighbours: neighbours::read(&roots.proc)
            .into_iter()
            .map(|n| (n.ip, n))
            .collect(),
        interfaces: match previous {
            Some(previous) => interfaces::read_since(&roots.sys, &previous.interfaces),
            None => interfaces::read(&roots.sys),
        }
        .into_iter()
        .map(|i| (i.name.clone(), i))
        .collect(),
    }
}

fn base(
    context: &EventContext,
    action: &str,
    kind: &str,
    category: &str,
    kind_type: &str,
) -> Event {
    let mut event = Event::new(Utc::now());
    context.stamp(&mut event);
    event.set_str("event.dataset", INVENTORY_DATASET);
    event.set_str("event.module", "inventory");
    event.set_str("event.kind", kind);
    event.set_str("event.action", action);
    event.set("event.category", json!([category]));
    event.set("event.type", json!([kind_type]));
    event
}

/// Names the item an event is about: its kind and a key unique on the host at one time
/// (a process by pid and start time, a port by protocol and address, …), so the
/// collector can keep each item's lifetime.
fn item(event: &mut Event, kind: &str, key: String) {
    event.set_str("yagura.inventory.item", kind);
    event.set_str("yagura.inventory.key", key);
}

fn process_fields(event: &mut Event, p: &Process) {
    event.set("process.pid", json!(p.pid));
    event.set("process.parent.pid", json!(p.ppid));
    event.set_str("process.name", p.name.clone());
    if let Some(exe) = &p.exe {
        event.set_str("process.executable", exe.display().to_string());
    }
    if let Some(hash) = &p.exe_sha256 {
        event.set_str("process.hash.sha256", hash.clone());
    }
    if !p.cmdline.is_empty() {
        event.set_str("process.command_line", p.cmdline.join(" "));
        event.set("process.args", json!(p.cmdline));
    }
    event.set_str("user.id", p.uid.to_string());
    if let Some(user) = &p.user {
        event.set_str("user.name", user.clone());
    }
    if p.exe_deleted {
        event.set("yagura.inventory.exe_deleted", json!(true));
    }
}

fn process_event(
    context: &EventContext,
    p: &Process,
    action: &str,
    kind: &str,
    kind_type: &str,
) -> Event {
    let mut event = base(context, action, kind, "process", kind_type);
    item(
        &mut event,
        "process",
        format!("{}:{}", p.pid, p.start_ticks),
    );
    process_fields(&mut event, p);
    let verb = match action {
        "process_started" => "started",
        "process_exited" => "exited",
        _ => "running",
    };
    event.set_str("message", format!("process {} ({}) {verb}", p.name, p.pid));
    event
}

fn port_event(context: &EventContext, port: &Port, action: &str, kind: &str) -> Event {
    let mut event = base(context, action, kind, "network", "info");
    item(
        &mut event,
        "port",
        format!("{}/{}", protocol_name(port.protocol), port.local),
    );
    event.set_str("network.transport", protocol_name(port.protocol));
    event.set_str("server.ip", port.local.ip().to_string());
    event.set("server.port", json!(port.local.port()));
    if let Some(pid) = port.pid {
        event.set("process.pid", json!(pid));
    }
    if let Some(name) = &port.process {
        event.set_str("process.name", name.clone());
    }
    let verb = match action {
        "port_opened" => "opened",
        "port_closed" => "closed",
        _ => "listening",
    };
    event.set_str(
        "message",
        format!(
            "{} port {} {verb}{}",
            protocol_name(port.protocol),
            port.local,
            port.process
                .as_ref()
                .map(|p| format!(" by {p}"))
                .unwrap_or_default()
        ),
    );
    event
}

fn usb_event(context: &EventContext, device: &UsbDevice, action: &str, kind: &str) -> Event {
    let mut event = base(context, action, kind, "host", "info");
    item(
        &mut event,
        "usb",
        format!("{}/{}", device.bus_id, device.key()),
    );
    event.set_str("device.id", device.key());
    event.set_str(
        "device.model.identifier",
        format!("{}:{}", device.vendor_id, device.product_id),
    );
    if let Some(product) = &device.product {
        event.set_str("device.model.name", product.clone());
    }
    if let Some(manufacturer) = &device.manufacturer {
        event.set_str("device.manufacturer", manufacturer.clone());
    }
    let usb = json!({
        "bus_id": device.bus_id,
        "vendor_id": device.vendor_id,
        "product_id": device.product_id,
        "serial": device.serial,
        "class": device.class,
        "authorized": device.authorized,
    });
    event.set("yagura.inventory.usb", usb);
    let verb = match action {
        "usb_attached" => "attached",
        "usb_removed" => "removed",
        _ => "present",
    };
    event.set_str(
        "message",
        format!(
            "USB device {} ({}) {verb} at {}",
            device.key(),
            device.product.as_deref().unwrap_or("unnamed"),
            device.bus_id
        ),
    );
    event
}

fn user_event(
    context: &EventContext,
    user: &User,
    action: &str,
    kind: &str,
    kind_type: &str,
) -> Event {
    let mut event = base(context, action, kind, "iam", kind_type);
    item(&mut event, "user", user.name.clone());
    event.set("event.type", json!(["user", kind_type]));
    event.set_str("user.name", user.name.clone());
    event.set_str("user.id", user.uid.to_string());
    event.set_str("group.id", user.gid.to_string());
    event.set(
        "yagura.inventory.user",
        json!({"home": user.home, "shell": user.shell}),
    );
    event.set_str(
        "message",
        format!(
            "local user {} (uid {}) {}",
            user.name,
            user.uid,
            match action {
                "user_added" => "added",
                "user_removed" => "removed",
                _ => "present",
            }
        ),
    );
    event
}

fn neighbour_event(
    context: &EventContext,
    n: &Neighbour,
    action: &str,
    kind: &str,
    previous_mac: Option<&str>,
) -> Event {
    let mut event = base(context, action, kind, "network", "info");
    item(&mut event, "neighbour", n.ip.to_string());
    let mut fields = json!({
        "ip": n.ip.to_string(),
        "mac": n.mac,
        "interface": n.interface,
        "state": n.state,
    });
    if let Some(previous) = previous_mac {
        fields["previous_mac"] = Value::String(previous.to_string());
    }
    event.set("yagura.inventory.neighbour", fields);
    event.set("related.ip", json!([n.ip.to_string()]));
    event.set_str(
        "message",
        format!(
            "neighbour {} is {} on {}{}",
            n.ip,
            n.mac.as_deref().unwrap_or("unresolved"),
            n.interface,
            previous_mac
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default()
        ),
    );
    event
}

/// What an interface change was: the addresses that came and went, the MAC before.
#[derive(Default)]
struct InterfaceChange<'a> {
    added: Vec<&'a ipnet::IpNet>,
    removed: Vec<&'a ipnet::IpNet>,
    previous_mac: Option<Option<&'a str>>,
}

impl<'a> InterfaceChange<'a> {
    /// `None` when neither the addresses nor the MAC changed (state, MTU and the rest
    /// are not diffed: a cable plugged in is no inventory change).
    fn between(before: &'a NetInterface, after: &'a NetInterface) -> Option<Self> {
        let change = InterfaceChange {
            added: after
                .addresses
                .iter()
                .filter(|a| !before.addresses.contains(a))
                .collect(),
            removed: before
                .addresses
                .iter()
                .filter(|a| !after.addresses.contains(a))
                .collect(),
            previous_mac: (before.mac != after.mac).then_some(before.mac.as_deref()),
        };
        (!change.added.is_empty() || !change.removed.is_empty() || change.previous_mac.is_some())
            .then_some(change)
    }
}

/// An interface as an event: its state in `yagura.inventory.interface` (MAC lower case
/// with colons, as `yagura.inventory.neighbour.mac`), its addresses in `related.ip`. ECS
/// has no top-level interface fields (its `interface.*` set belongs under
/// `observer.ingress`/`egress`), and `host.mac`/`host.ip` describe the whole host: they
/// are on the snapshot's summary.
fn interface_event(
    context: &EventContext,
    i: &NetInterface,
    action: &str,
    kind: &str,
    kind_type: &str,
    change: Option<&InterfaceChange>,
) -> Event {
    let mut event = base(context, action, kind, "host", kind_type);
    item(&mut event, "interface", i.name.clone());
    let mut fields = json!({
        "name": i.name,
        "mac": i.mac,
        "mac_assignment": i.mac_assignment,
        "operstate": i.operstate,
        "mtu": i.mtu,
        "link_type": i.link_type,
        "kind": i.kind,
        "physical": i.physical,
        "addresses": i.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    if let Some(change) = change {
        if !change.added.is_empty() {
            fields["added_addresses"] = json!(
                change
                    .added
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            );
        }
        if !change.removed.is_empty() {
            fields["removed_addresses"] = json!(
                change
                    .removed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            );
        }
        if let Some(previous) = change.previous_mac {
            fields["previous_mac"] = json!(previous);
        }
    }
    event.set("yagura.inventory.interface", fields);
    let ips: Vec<String> = i.addresses.iter().map(|a| a.addr().to_string()).collect();
    if !ips.is_empty() {
        event.set("related.ip", json!(ips));
    }
    let what = match (action, change) {
        ("interface_added", _) => "added".to_string(),
        ("interface_removed", _) => "removed".to_string(),
        (_, Some(change)) => {
            let mut parts = Vec::new();
            for a in &change.added {
                parts.push(format!("+{a}"));
            }
            for a in &change.removed {
                parts.push(format!("-{a}"));
            }
            if let Some(previous) = change.previous_mac {
                parts.push(format!("MAC was {}", previous.unwrap_or("none")));
            }
            format!("changed ({})", parts.join(", "))
        }
        _ => "present".to_string(),
    };
    event.set_str(
        "message",
        format!(
            "network interface {} ({}{}) {what}",
            i.name,
            i.mac.as_deref().unwrap_or("no MAC"),
            if i.addresses.is_empty() {
                String::new()
            } else {
                format!(
                    ", {}",
                    i.addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        ),
    );
    event
}

/// A mount as a snapshot item, keyed by its mount point; its fields under
/// `yagura.inventory.mount` (ECS has no mount fields).
fn mount_event(context: &EventContext, m: &Mount) -> Event {
    let mut event = base(context, "mount_present", "state", "host", "info");
    item(&mut event, "mount", m.mount_point.clone());
    event.set(
        "yagura.inventory.mount",
        json!({
            "device": m.device,
            "mount_point": m.mount_point,
            "fs_type": m.fs_type,
            "options": m.options,
            "total_bytes": m.total_bytes,
            "available_bytes": m.available_bytes,
        }),
    );
    event.set_str(
        "message",
        format!(
            "{} ({}) mounted on {}{}",
            m.device,
            m.fs_type,
            m.mount_point,
            match (m.available_bytes, m.total_bytes) {
                (Some(available), Some(total)) =>
                    format!(", {available} of {total} bytes available"),
                _ => String::new(),
            }
        ),
    );
    event
}

/// A MAC as ECS writes it in `host.mac`: upper case, octets joined by hyphens (RFC 7042).
fn ecs_mac(mac: &str) -> String {
    mac.to_ascii_uppercase().replace(':', "-")
}

/// The host's MACs (ECS notation) and IP addresses for the summary's `host.mac` and
/// `host.ip`: every interface's, once each, loopback addresses left out.
fn host_addresses(interfaces: &BTreeMap<String, NetInterface>) -> (Vec<String>, Vec<String>) {
    let macs: std::collections::BTreeSet<String> = interfaces
        .values()
        .filter_map(|i| i.mac.as_deref().map(ecs_mac))
        .collect();
    let ips: std::collections::BTreeSet<IpAddr> = interfaces
        .values()
        .flat_map(|i| i.addresses.iter().map(ipnet::IpNet::addr))
        .filter(|ip| !ip.is_loopback())
        .collect();
    (
        macs.into_iter().collect(),
        ips.into_iter().map(|ip| ip.to_string()).collect(),
    )
}

/// The change events from `before` to `after`.
pub fn changes(context: &EventContext, before: &Observed, after: &Observed) -> Vec<Event> {
    let mut events = Vec::new();
    for (key, p) in &after.processes {
        if !before.processes.contains_key(key) {
            events.push(process_event(
                context,
                p,
                "process_started",
                "event",
                "start",
            ));
        }
    }
    for (key, p) in &before.processes {
        if !after.processes.contains_key(key) {
            events.push(process_event(context, p, "process_exited", "event", "end"));
        }
    }
    for (key, port) in &after.ports {
        if !before.ports.contains_key(key) {
            events.push(port_event(context, port, "port_opened", "event"));
        }
    }
    for (key, port) in &before.ports {
        if !after.ports.contains_key(key) {
            events.push(port_event(context, port, "port_closed", "event"));
        }
    }
    for (key, device) in &after.usb {
        match before.usb.get(key) {
            Some(old) if old.key() == device.key() => {}
            _ => events.push(usb_event(context, device, "usb_attached", "event")),
        }
    }
    for (key, device) in &before.usb {
        match after.usb.get(key) {
            Some(new) if new.key() == device.key() => {}
            _ => events.push(usb_event(context, device, "usb_removed", "event")),
        }
    }
    for (name, user) in &after.users {
        if !before.users.contains_key(name) {
            events.push(user_event(context, user, "user_added", "event", "creation"));
        }
    }
    for (name, user) in &before.users {
        if !after.users.contains_key(name) {
            events.push(user_event(
                context,
                user,
                "user_removed",
                "event",
                "deletion",
            ));
        }
    }
    for (ip, n) in &after.neighbours {
        let Some(mac) = &n.mac else { continue };
        match before.neighbours.get(ip).and_then(|old| old.mac.as_deref()) {
            None => events.push(neighbour_event(
                context,
                n,
                "neighbour_added",
                "event",
                None,
            )),
            Some(old) if old != mac => {
                events.push(neighbour_event(
                    context,
                    n,
                    "neighbour_changed",
                    "event",
                    Some(old),
                ));
            }
            Some(_) => {}
        }
    }
    for (name, now) in &after.interfaces {
        match before.interfaces.get(name) {
            None => events.push(interface_event(
                context,
                now,
                "interface_added",
                "event",
                "info",
                None,
            )),
            Some(old) => {
                if let Some(change) = InterfaceChange::between(old, now) {
                    events.push(interface_event(
                        context,
                        now,
                        "interface_changed",
                        "event",
                        "change",
                        Some(&change),
                    ));
                }
            }
        }
    }
    for (name, old) in &before.interfaces {
        if !after.interfaces.contains_key(name) {
            events.push(interface_event(
                context,
                old,
                "interface_removed",
                "event",
                "info",
                None,
            ));
        }
    }
    events
}

/// Host facts read from /proc and /etc for the snapshot's summary event, with the disks.
fn host_facts(roots: &Roots, disks: &[Disk]) -> Value {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let os_release = read(&roots.etc.join("os-release")).unwrap_or_default();
    let os_field = |key: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
        })
    };
    let meminfo = read(&roots.proc.join("meminfo")).unwrap_or_default();
    let mem_total_kib = meminfo.lines().find_map(|l| {
        l.strip_prefix("MemTotal:")
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    });
    let boot_time = read(&roots.proc.join("stat")).and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<i64>().ok())
        })
    });
    let cpus = read(&roots.proc.join("cpuinfo")).map_or(0, |s| {
        s.lines().filter(|l| l.starts_with("processor")).count()
    });
    json!({
        "os": {
            "name": os_field("NAME"),
            "version": os_field("VERSION_ID"),
            "kernel": read(&roots.proc.join("sys/kernel/osrelease")),
        },
        "boot_time": boot_time.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()),
        "machine_id": read(&roots.etc.join("machine-id")),
        "memory_bytes": mem_total_kib.map(|k| k * 1024),
        "cpus": cpus,
        "disks": disks,
    })
}

/// A full snapshot: one summary event (host facts, counts) and one `state` event per
/// item, all carrying the snapshot's id. Returns the events and what was observed (the
/// base of the next diff).
pub fn snapshot(
    context: &EventContext,
    roots: &Roots,
    hasher: &mut ExeHasher,
) -> (Vec<Event>, Observed) {
    let observed = observe(roots, hasher);
    let packages = packages::read_packages(&roots.root);
    let groups = accounts::read_groups(&roots.etc).unwrap_or_default();
    let mounts = mounts::read_mounts(&roots.proc, &roots.root);
    let disks = mounts::read_disks(&roots.sys);
    let id = Uuid::now_v7().to_string();
    let mut events = Vec::new();
    for p in observed.processes.values() {
        events.push(process_event(
            context,
            p,
            "process_present",
            "state",
            "info",
        ));
    }
    for port in observed.ports.values() {
        events.push(port_event(context, port, "port_present", "state"));
    }
    for device in observed.usb.values() {
        events.push(usb_event(context, device, "usb_present", "state"));
    }
    for user in observed.users.values() {
        events.push(user_event(context, user, "user_present", "state", "info"));
    }
    for n in observed.neighbours.values() {
        events.push(neighbour_event(
            context,
            n,
            "neighbour_present",
            "state",
            None,
        ));
    }
    for interface in observed.interfaces.values() {
        events.push(interface_event(
            context,
            interface,
            "interface_present",
            "state",
            "info",
            None,
        ));
    }
    for mount in &mounts {
        events.push(mount_event(context, mount));
    }
    for group in &groups {
        let mut event = base(context, "group_present", "state", "iam", "group");
        item(&mut event, "group", group.name.clone());
        event.set_str("group.name", group.name.clone());
        event.set_str("group.id", group.gid.to_string());
        event.set("yagura.inventory.group_members", json!(group.members));
        event.set_str(
            "message",
            format!("local group {} (gid {})", group.name, group.gid),
        );
        events.push(event);
    }
    for package in &packages {
        let mut event = base(context, "package_present", "state", "package", "info");
        item(
            &mut event,
            "package",
            format!(
                "{}:{}",
                package.name,
                package.architecture.as_deref().unwrap_or("")
            ),
        );
        event.set_str("package.name", package.name.clone());
        event.set_str("package.version", package.version.clone());
        if let Some(arch) = &package.architecture {
            event.set_str("package.architecture", arch.clone());
        }
        event.set_str(
            "message",
            format!("package {} {}", package.name, package.version),
        );
        events.push(event);
    }
    let mut summary = base(context, "inventory_snapshot", "state", "host", "info");
    summary.set("yagura.inventory.host", host_facts(roots, &disks));
    let (macs, ips) = host_addresses(&observed.interfaces);
    if !macs.is_empty() {
        summary.set("host.mac", json!(macs));
    }
    if !ips.is_empty() {
        summary.set("host.ip", json!(ips));
    }
    summary.set(
        "yagura.inventory.counts",
        json!({
            "processes": observed.processes.len(),
            "ports": observed.ports.len(),
            "usb": observed.usb.len(),
            "users": observed.users.len(),
            "groups": groups.len(),
            "packages": packages.len(),
            "neighbours": observed.neighbours.len(),
            "interfaces": observed.interfaces.len(),
            "mounts": mounts.len(),
            "disks": disks.len(),
        }),
    );
    summary.set_str(
        "message",
        format!(
            "inventory snapshot: {} processes, {} listening ports, {} packages, {} USB devices, {} network interfaces, {} mounts, {} disks",
            observed.processes.len(),
            observed.ports.len(),
            packages.len(),
            observed.usb.len(),
            observed.interfaces.len(),
            mounts.len(),
            disks.len()
        ),
    );
    // A snapshot is one moment: every item carries the summary's time (items made before
    // it would otherwise precede the snapshot they belong to).
    let taken_at = summary.get_str("@timestamp").map(str::to_string);
    events.insert(0, summary);
    for event in &mut events {
        event.set_str("yagura.inventory.snapshot_id", id.clone());
        if let Some(time) = &taken_at {
            event.set_str("@timestamp", time.clone());
        }
    }
    (events, observed)
}

/// Most events handed over at once (a snapshot of a busy host is thousands of events;
/// the producer seals them into batches of its usual size).
const CHUNK: usize = 500;

/// Runs the inventory on its own thread until `stop`: a snapshot at once and every
/// `snapshot_every`, change events every `diff_every`, handed to the producer through
/// `out` (bounded: a producer that cannot keep up slows the inventory down, it does not
/// make it drop events).
pub fn spawn(
    roots: Roots,
    context: EventContext,
    diff_every: std::time::Duration,
    snapshot_every: std::time::Duration,
    out: std::sync::mpsc::SyncSender<Vec<Event>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut allowlist: Option<crate::allowlist::runtime::Enforcer>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    std::thread::Builder::new()
        .name("inventory".into())
        .spawn(move || {
            let mut hasher = ExeHasher::new();
            let send = |events: Vec<Event>| {
                for chunk in events.chunks(CHUNK) {
                    if out.send(chunk.to_vec()).is_err() {
                        return false;
                    }
                }
                true
            };
            // The allowlist judges every observation (loading its policy first).
            let mut judged = |observed: &Observed, events: &mut Vec<Event>, full: bool| {
                if let Some(enforcer) = allowlist.as_mut() {
                    events.extend(enforcer.reload_if_changed(&context));
                    events.extend(enforcer.judge(observed, &context));
                    if full {
                        events.extend(enforcer.proposal(observed, &context));
                    }
                }
            };
            let (mut events, mut last) = snapshot(&context, &roots, &mut hasher);
            judged(&last, &mut events, true);
            if !send(events) {
                return;
            }
            let mut last_snapshot = Instant::now();
            let mut next_diff = Instant::now() + diff_every;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next_diff {
                    std::thread::sleep(Duration::from_millis(100).min(diff_every));
                    continue;
                }
                next_diff = Instant::now() + diff_every;
                let events = if last_snapshot.elapsed() >= snapshot_every {
                    last_snapshot = Instant::now();
                    let (mut events, now) = snapshot(&context, &roots, &mut hasher);
                    judged(&now, &mut events, true);
                    last = now;
                    events
                } else {
                    let now = observe_since(&roots, &mut hasher, Some(&last));
                    let mut events = changes(&context, &last, &now);
                    judged(&now, &mut events, false);
                    last = now;
                    events
                };
                if !events.is_empty() && !send(events) {
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> EventContext {
        EventContext {
            host_name: "test-host".into(),
            agent_id: Uuid::now_v7(),
        }
    }

    fn actions(events: &[Event]) -> Vec<(String, Option<u64>)> {
        events
            .iter()
            .map(|e| {
                (
                    e.action().unwrap_or_default().to_string(),
                    e.get("server.port")
                        .or_else(|| e.get("process.pid"))
                        .and_then(Value::as_u64),
                )
            })
            .collect()
    }

    /// On this machine: a process started and a port opened show up in the next diff,
    /// and their end in the one after.
    #[test]
    fn a_diff_sees_a_process_start_and_a_port_open_and_their_end() {
        let roots = Roots::default();
        let mut hasher = ExeHasher::new();
        let before = observe(&roots, &mut hasher);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = u64::from(listener.local_addr().expect("addr").port());
        // As the inventory thread does: each cycle reuses what the one before read.
        let during = observe_since(&roots, &mut hasher, Some(&before));
        let started = changes(&context(), &before, &during);
        let seen = actions(&started);
        assert!(
            seen.contains(&("process_started".into(), Some(u64::from(child.id())))),
            "{seen:?}"
        );
        let opened = started
            .iter()
            .find(|e| {
                e.action() == Some("port_opened")
                    && e.get("server.port").and_then(Value::as_u64) == Some(port)
            })
            .expect("port_opened");
        assert_eq!(
            opened.get("process.pid").and_then(Value::as_u64),
            Some(u64::from(std::process::id())),
            "the port's owner"
        );
        let sleep = started
            .iter()
            .find(|e| {
                e.action() == Some("process_started")
                    && e.get("process.pid").and_then(Value::as_u64) == Some(u64::from(child.id()))
            })
            .expect("sleep started");
        assert_eq!(sleep.get_str("process.name"), Some("sleep"));
        assert_eq!(sleep.get_str("event.dataset"), Some(INVENTORY_DATASET));
        assert!(
            sleep
                .get_str("process.hash.sha256")
                .is_some_and(|h| h.len() == 64)
        );
        sleep.validate().expect("valid event");

        child.kill().expect("kill");
        child.wait().expect("wait");
        drop(listener);
        let after = observe_since(&roots, &mut hasher, Some(&during));
        let ended = actions(&changes(&context(), &during, &after));
        assert!(
            ended.contains(&("process_exited".into(), Some(u64::from(child.id())))),
            "{ended:?}"
        );
        assert!(
            ended.contains(&("port_closed".into(), Some(port))),
            "{ended:?}"
        );
    }

    /// The snapshot holds what /proc holds: this process with its executable, pid 1, and
    /// one process event per numeric /proc entry (give or take what came and went).
    #[test]
    fn a_snapshot_matches_proc() {
        let (events, observed) = snapshot(&context(), &Roots::default(), &mut ExeHasher::new());
        assert_eq!(events[0].action(), Some("inventory_snapshot"));
        let id = events[0]
            .get_str("yagura.inventory.snapshot_id")
            .expect("id")
            .to_string();
        assert!(
            events
                .iter()
                .all(|e| e.get_str("yagura.inventory.snapshot_id") == Some(&id))
        );
        let me = events
            .iter()
            .find(|e| {
                e.action() == Some("process_present")
                    && e.get("process.pid").and_then(Value::as_u64)
                        == Some(u64::from(std::process::id()))
            })
            .expect("this process");
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(me.get_str("process.executable"), exe.to_str());
        assert!(observed.processes.keys().any(|(pid, _)| *pid == 1));
        let in_proc = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count();
        let listed = observed.processes.len();
        assert!(
            listed.abs_diff(in_proc) <= 5,
            "{listed} listed, {in_proc} in /proc"
        );
        assert!(
            events.iter().any(|e| e.action() == Some("package_present")),
            "dpkg packages"
        );
        assert!(
            events
                .iter()
                .any(|e| e.action() == Some("user_present")
                    && e.get_str("user.name") == Some("root"))
        );

        // Interfaces: loopback at least, with its address; the summary has the host's.
        let lo = events
            .iter()
            .find(|e| {
                e.action() == Some("interface_present")
                    && e.get_str("yagura.inventory.key") == Some("lo")
            })
            .expect("lo");
        assert_eq!(lo.get_str("yagura.inventory.item"), Some("interface"));
        assert!(
            lo.get("related.ip")
                .and_then(Value::as_array)
                .is_some_and(|ips| ips.iter().any(|ip| ip == "127.0.0.1")),
            "{:?}",
            lo.get("yagura.inventory.interface")
        );
        lo.validate().expect("valid event");
        let summary = &events[0];
        let list = |path: &str| {
            summary
                .get(path)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        assert!(
            list("host.ip").iter().all(|ip| ip != "127.0.0.1"),
            "no loopback in host.ip"
        );
        for mac in list("host.mac") {
            let mac = mac.as_str().expect("a string");
            assert!(
                mac.contains('-') && !mac.contains(':') && mac == mac.to_ascii_uppercase(),
                "ECS notation: {mac}"
            );
        }
        let interfaces = events
            .iter()
            .filter(|e| e.action() == Some("interface_present"))
            .count();
        assert_eq!(
            summary
                .get("yagura.inventory.counts.interfaces")
                .and_then(Value::as_u64),
            Some(interfaces as u64)
        );

        // Mounts: `/`, with its size; no pseudo filesystem.
        let root = events
            .iter()
            .find(|e| {
                e.action() == Some("mount_present")
                    && e.get_str("yagura.inventory.key") == Some("/")
            })
            .expect("the / mount");
        assert_eq!(root.get_str("yagura.inventory.item"), Some("mount"));
        assert!(
            root.get("yagura.inventory.mount.total_bytes")
                .and_then(Value::as_u64)
                .is_some_and(|t| t > 0)
        );
        assert!(!events.iter().any(|e| {
            e.action() == Some("mount_present")
                && e.get_str("yagura.inventory.mount.fs_type") == Some("proc")
        }));
        let disks = summary
            .get("yagura.inventory.host.disks")
            .and_then(Value::as_array)
            .expect("disks");
        assert_eq!(
            summary
                .get("yagura.inventory.counts.disks")
                .and_then(Value::as_u64),
            Some(disks.len() as u64)
        );
    }

    fn interface(name: &str, mac: Option<&str>, addresses: &[&str]) -> NetInterface {
        NetInterface {
            name: name.into(),
            mac: mac.map(str::to_string),
            mac_assignment: Some("permanent".into()),
            operstate: Some("up".into()),
            mtu: Some(1500),
            link_type: Some("ether".into()),
            kind: None,
            physical: true,
            addresses: addresses.iter().map(|a| a.parse().expect("net")).collect(),
        }
    }

    #[test]
    fn interface_changes() {
        let mut before = Observed::default();
        before.interfaces.insert(
            "eth0".into(),
            interface(
                "eth0",
                Some("52:54:00:00:00:01"),
                &["192.0.2.10/24", "fe80::1/64"],
            ),
        );
        before.interfaces.insert(
            "eth1".into(),
            interface("eth1", Some("52:54:00:00:00:02"), &["198.51.100.7/24"]),
        );
        before
            .interfaces
            .insert("wg0".into(), interface("wg0", None, &["10.8.0.2/24"]));
        let mut after = before.clone();
        // eth0 gets another address and loses its link-local one; eth1's MAC is changed
        // (state and MTU changes are not reported); wg0 goes, tun0 comes.
        after.interfaces.insert(
            "eth0".into(),
            interface(
                "eth0",
                Some("52:54:00:00:00:01"),
                &["192.0.2.10/24", "192.0.2.99/24"],
            ),
        );
        let mut eth1 = interface("eth1", Some("de:ad:be:ef:00:02"), &["198.51.100.7/24"]);
        eth1.operstate = Some("down".into());
        after.interfaces.insert("eth1".into(), eth1);
        after.interfaces.remove("wg0");
        after
            .interfaces
            .insert("tun0".into(), interface("tun0", None, &["10.9.0.2/32"]));
        let mut unchanged_but_state = after.clone();
        if let Some(eth0) = unchanged_but_state.interfaces.get_mut("eth0") {
            eth0.operstate = Some("lowerlayerdown".into());
            eth0.mtu = Some(9000);
        }

        let events = changes(&context(), &before, &after);
        let names: Vec<(&str, &str)> = events
            .iter()
            .map(|e| {
                (
                    e.action().unwrap_or_default(),
                    e.get_str("yagura.inventory.key").unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("interface_changed", "eth0"),
                ("interface_changed", "eth1"),
                ("interface_added", "tun0"),
                ("interface_removed", "wg0"),
            ]
        );
        let eth0 = &events[0];
        let field = |e: &Event, name: &str| {
            e.get(&format!("yagura.inventory.interface.{name}"))
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(field(eth0, "added_addresses"), json!(["192.0.2.99/24"]));
        assert_eq!(field(eth0, "removed_addresses"), json!(["fe80::1/64"]));
        assert_eq!(
            field(eth0, "addresses"),
            json!(["192.0.2.10/24", "192.0.2.99/24"]),
            "the whole new state, which the collector keeps as the item"
        );
        assert_eq!(field(eth0, "previous_mac"), Value::Null);
        assert_eq!(
            eth0.get("related.ip"),
            Some(&json!(["192.0.2.10", "192.0.2.99"]))
        );
        assert_eq!(eth0.get("event.type"), Some(&json!(["change"])));
        eth0.validate().expect("valid");
        let eth1 = &events[1];
        assert_eq!(field(eth1, "previous_mac"), json!("52:54:00:00:00:02"));
        assert_eq!(field(eth1, "mac"), json!("de:ad:be:ef:00:02"));
        assert_eq!(field(eth1, "added_addresses"), Value::Null);
        assert!(
            eth1.message()
                .is_some_and(|m| m.contains("MAC was 52:54:00:00:00:02")),
            "{:?}",
            eth1.message()
        );

        assert!(
            changes(&context(), &after, &unchanged_but_state).is_empty(),
            "state and MTU are not diffed"
        );
        assert!(changes(&context(), &after, &after).is_empty());
    }

    #[test]
    fn host_addresses_for_the_summary() {
        let mut observed = Observed::default();
        observed.interfaces.insert(
            "lo".into(),
            interface("lo", None, &["127.0.0.1/8", "::1/128"]),
        );
        observed.interfaces.insert(
            "eth0".into(),
            interface(
                "eth0",
                Some("52:54:00:ab:cd:ef"),
                &["192.0.2.10/24", "fe80::5054:ff:feab:cdef/64"],
            ),
        );
        observed.interfaces.insert(
            "eth0.10".into(),
            interface("eth0.10", Some("52:54:00:ab:cd:ef"), &["192.0.2.10/24"]),
        );
        let (macs, ips) = host_addresses(&observed.interfaces);
        assert_eq!(macs, ["52-54-00-AB-CD-EF"], "ECS notation, once");
        assert_eq!(
            ips,
            ["192.0.2.10", "fe80::5054:ff:feab:cdef"],
            "no loopback, once"
        );
    }

    fn device(bus: &str, serial: &str) -> UsbDevice {
        UsbDevice {
            bus_id: bus.into(),
            vendor_id: "0781".into(),
            product_id: "5581".into(),
            serial: Some(serial.into()),
            class: Some("00".into()),
            manufacturer: Some("SanDisk".into()),
            product: Some("Ultra".into()),
            authorized: Some(true),
            sys_path: PathBuf::from(format!("/sys/bus/usb/devices/{bus}")),
        }
    }

    #[test]
    fn usb_users_and_neighbours_changes() {
        let mut before = Observed::default();
        before.usb.insert("1-1".into(), device("1-1", "AAA"));
        before.users.insert(
            "alice".into(),
            User {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/alice".into(),
                shell: "/bin/bash".into(),
            },
        );
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        before.neighbours.insert(
            ip,
            Neighbour {
                ip,
                mac: Some("52:54:00:00:00:01".into()),
                interface: "eth0".into(),
                state: "REACHABLE".into(),
            },
        );
        let mut after = before.clone();
        // Another stick in the same port, a new user, the gateway's MAC changed.
        after.usb.insert("1-1".into(), device("1-1", "BBB"));
        after.users.insert(
            "mallory".into(),
            User {
                name: "mallory".into(),
                uid: 0,
                gid: 0,
                home: "/root".into(),
                shell: "/bin/sh".into(),
            },
        );
        after.neighbours.insert(
            ip,
            Neighbour {
                ip,
                mac: Some("de:ad:be:ef:00:01".into()),
                interface: "eth0".into(),
                state: "REACHABLE".into(),
            },
        );
        let events = changes(&context(), &before, &after);
        let names: Vec<&str> = events.iter().filter_map(|e| e.action()).collect();
        assert_eq!(
            names,
            [
                "usb_attached",
                "usb_removed",
                "user_added",
                "neighbour_changed"
            ]
        );
        assert_eq!(events[0].get_str("device.id"), Some("0781:5581:BBB"));
        assert_eq!(events[1].get_str("device.id"), Some("0781:5581:AAA"));
        assert_eq!(events[2].get_str("user.name"), Some("mallory"));
        assert_eq!(
            events[3]
                .get("yagura.inventory.neighbour.previous_mac")
                .and_then(Value::as_str),
            Some("52:54:00:00:00:01")
        );
        assert!(
            changes(&context(), &after, &after).is_empty(),
            "no change, no event"
        );
    }
}
