//! `usb`: the USB devices attached to the machine, from sysfs, and the switch that
//! (de)authorises one.
//!
//! `<sys>/bus/usb/devices/` has one entry per device and per interface, each a symlink
//! into `/sys/devices/…`:
//!
//! * `usb1`, `usb2`, …: root hubs (the host controllers' own hub, vendor `1d6b`, Linux
//!   Foundation). Kept: an unexpected controller is inventory too.
//! * `1-1`, `1-1.2`, …: devices, named by bus and port path.
//! * `1-1:1.0`, …: interfaces of a device (`CONFIG.INTERFACE` after the colon). Skipped:
//!   they carry no `idVendor` and are part of their device.
//!
//! Attributes are read from the files of the device directory (`idVendor`, `idProduct`,
//! `serial`, `bDeviceClass`, `manufacturer`, `product`, `authorized`). They come from the
//! device's descriptors, so a malicious device chooses them: each is trimmed, and one that
//! is missing, empty or not UTF-8 is `None`, never an error.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One USB device (or root hub).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsbDevice {
    /// The sysfs name: bus and port path (`1-1.2`), or `usbN` for a root hub.
    pub bus_id: String,
    /// `idVendor`: four lower-case hex digits (`046d`).
    pub vendor_id: String,
    /// `idProduct`: four lower-case hex digits.
    pub product_id: String,
    /// The serial number string descriptor, if the device has one.
    pub serial: Option<String>,
    /// `bDeviceClass`, two hex digits (`00`: defined per interface, `09`: hub, `ef`:
    /// miscellaneous).
    pub class: Option<String>,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// Whether the kernel lets drivers bind to the device; `None` if not readable.
    pub authorized: Option<bool>,
    /// The device's directory: the target of the `bus/usb/devices` link when it resolves,
    /// the link itself otherwise.
    pub sys_path: PathBuf,
}

impl UsbDevice {
    /// The device's identity for allow-lists: `vendor:product`, and `:serial` when it has
    /// one. Independent of the port it is plugged into. (The serial is whatever the device
    /// claims; a key is an identification, not an authentication.)
    pub fn key(&self) -> String {
        match &self.serial {
            Some(serial) => format!("{}:{}:{serial}", self.vendor_id, self.product_id),
            None => format!("{}:{}", self.vendor_id, self.product_id),
        }
    }
}

/// An I/O error that names the path it is about (the kernel's message alone does not).
fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// An attribute file's trimmed text; `None` if missing, unreadable, empty or not UTF-8.
fn attribute(dir: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(dir.join(name)).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// One entry of `bus/usb/devices`; `None` for interfaces and entries without `idVendor`.
fn device(entry: &Path, bus_id: &str) -> Option<UsbDevice> {
    if bus_id.contains(':') {
        return None;
    }
    let vendor_id = attribute(entry, "idVendor")?.to_ascii_lowercase();
    let product_id = attribute(entry, "idProduct")?.to_ascii_lowercase();
    let authorized = match attribute(entry, "authorized").as_deref() {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    };
    Some(UsbDevice {
        bus_id: bus_id.to_string(),
        vendor_id,
        product_id,
        serial: attribute(entry, "serial"),
        class: attribute(entry, "bDeviceClass").map(|c| c.to_ascii_lowercase()),
        manufacturer: attribute(entry, "manufacturer"),
        product: attribute(entry, "product"),
        authorized,
        sys_path: std::fs::canonicalize(entry).unwrap_or_else(|_| entry.to_path_buf()),
    })
}

/// The USB devices and root hubs under `<sys_root>/bus/usb/devices`, sorted by `bus_id`
/// (as strings: `1-1.10` sorts before `1-1.2`).
///
/// Interfaces (names with `:`) and entries without both `idVendor` and `idProduct` are
/// skipped, as are entries that vanish while being read (a device unplugged meanwhile).
/// A machine without a USB bus (no `bus/usb`, as in many VMs and containers) has no
/// devices, which is not an error; a devices directory that exists but cannot be listed
/// is.
pub fn read_devices(sys_root: &Path) -> io::Result<Vec<UsbDevice>> {
    let dir = sys_root.join("bus").join("usb").join("devices");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(with_path(&dir, e)),
    };
    let mut devices: Vec<UsbDevice> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            device(&entry.path(), name.to_str()?)
        })
        .collect();
    devices.sort_by(|a, b| a.bus_id.cmp(&b.bus_id));
    Ok(devices)
}

/// Allows (`true`) or blocks (`false`) drivers from binding to the device, by writing
/// `1` or `0` to its `authorized` attribute. Blocking unbinds the drivers at once, so the
/// device stops working until it is allowed again; blocking a root hub blocks everything
/// behind it.
///
/// The attribute must exist: it is opened for writing but never created, so a device
/// unplugged meanwhile gives `NotFound` instead of a stray file. Needs root on a real
/// system.
pub fn set_authorized(device: &UsbDevice, allowed: bool) -> io::Result<()> {
    let path = device.sys_path.join("authorized");
    let value: &[u8] = if allowed { b"1" } else { b"0" };
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value))
        .map_err(|e| with_path(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a device directory under `devices/` and links it from `bus/usb/devices/`,
    /// as sysfs does.
    fn add(sys: &Path, real: &str, bus_id: &str, attributes: &[(&str, &str)]) -> PathBuf {
        let dir = sys.join("devices").join(real);
        std::fs::create_dir_all(&dir).expect("device dir");
        for (name, value) in attributes {
            std::fs::write(dir.join(name), format!("{value}\n")).expect("attribute");
        }
        let links = sys.join("bus/usb/devices");
        std::fs::create_dir_all(&links).expect("links dir");
        std::os::unix::fs::symlink(&dir, links.join(bus_id)).expect("symlink");
        dir
    }

    /// Two devices (one with a serial), a root hub, an interface, and an entry without
    /// `idVendor`.
    fn fixture() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tmp");
        let sys = tmp.path();
        let pci = "pci0000:00/0000:00:14.0";
        add(
            sys,
            &format!("{pci}/usb1"),
            "usb1",
            &[
                ("idVendor", "1d6b"),
                ("idProduct", "0002"),
                ("bDeviceClass", "09"),
                ("manufacturer", "Linux 6.8.0 xhci-hcd"),
                ("product", "xHCI Host Controller"),
                ("serial", "0000:00:14.0"),
                ("authorized", "1"),
            ],
        );
        add(
            sys,
            &format!("{pci}/usb1/1-1/1-1.2"),
            "1-1.2",
            &[
                ("idVendor", "0781"),
                ("idProduct", "5583"),
                ("bDeviceClass", "00"),
                ("manufacturer", " SanDisk "),
                ("product", "Ultra Fit"),
                ("serial", "4C530001230517114061"),
                ("authorized", "1"),
            ],
        );
        add(
            sys,
            &format!("{pci}/usb1/1-4"),
            "1-4",
            &[
                ("idVendor", "046D"),
                ("idProduct", "C52B"),
                ("bDeviceClass", "00"),
                ("manufacturer", "Logitech"),
                ("product", "USB Receiver"),
                ("authorized", "0"),
                ("serial", ""),
            ],
        );
        add(
            sys,
            &format!("{pci}/usb1/1-1/1-1.2/1-1.2:1.0"),
            "1-1.2:1.0",
            &[("bInterfaceClass", "08"), ("idVendor", "0781")],
        );
        add(
            sys,
            &format!("{pci}/usb1/1-3"),
            "1-3",
            &[("idProduct", "1234")],
        );
        // A non-UTF-8 product string from a misbehaving device.
        let dir = sys.join("devices").join(pci).join("usb1/1-4");
        std::fs::write(dir.join("product"), b"USB \xff Receiver\n").expect("product");
        tmp
    }

    #[test]
    fn fixture_tree_devices() {
        let tmp = fixture();
        let devices = read_devices(tmp.path()).expect("read");
        let ids: Vec<&str> = devices.iter().map(|d| d.bus_id.as_str()).collect();
        assert_eq!(
            ids,
            ["1-1.2", "1-4", "usb1"],
            "sorted, interface and 1-3 skipped"
        );

        let stick = &devices[0];
        assert_eq!(
            (stick.vendor_id.as_str(), stick.product_id.as_str()),
            ("0781", "5583")
        );
        assert_eq!(stick.serial.as_deref(), Some("4C530001230517114061"));
        assert_eq!(stick.manufacturer.as_deref(), Some("SanDisk"), "trimmed");
        assert_eq!(stick.product.as_deref(), Some("Ultra Fit"));
        assert_eq!(stick.class.as_deref(), Some("00"));
        assert_eq!(stick.authorized, Some(true));
        assert_eq!(stick.key(), "0781:5583:4C530001230517114061");
        let real = std::fs::canonicalize(tmp.path())
            .expect("canonical tmp")
            .join("devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2");
        assert_eq!(stick.sys_path, real, "the link is followed");

        let receiver = &devices[1];
        assert_eq!(receiver.vendor_id, "046d", "lower-cased");
        assert_eq!(receiver.product_id, "c52b");
        assert_eq!(receiver.serial, None, "an empty serial is none");
        assert_eq!(receiver.product, None, "not UTF-8");
        assert_eq!(receiver.authorized, Some(false));
        assert_eq!(receiver.key(), "046d:c52b");

        let hub = &devices[2];
        assert_eq!(hub.key(), "1d6b:0002:0000:00:14.0");
        assert_eq!(hub.class.as_deref(), Some("09"));
    }

    #[test]
    fn set_authorized_writes_the_attribute() {
        let tmp = fixture();
        let devices = read_devices(tmp.path()).expect("read");
        let stick = devices.iter().find(|d| d.bus_id == "1-1.2").expect("stick");
        set_authorized(stick, false).expect("block");
        let path = stick.sys_path.join("authorized");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "0");
        let again = read_devices(tmp.path()).expect("read");
        assert_eq!(again[0].authorized, Some(false));
        set_authorized(stick, true).expect("allow");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1");

        // A device that has gone: no stray file is created.
        let gone = UsbDevice {
            sys_path: tmp.path().join("devices/gone"),
            ..stick.clone()
        };
        let err = set_authorized(&gone, true).expect_err("gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("gone/authorized"), "{err}");
    }

    #[test]
    fn no_usb_bus_is_no_devices() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(read_devices(tmp.path()).expect("no bus").is_empty());
    }

    #[test]
    fn an_unlistable_devices_dir_is_an_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(tmp.path().join("bus/usb")).expect("bus");
        std::fs::write(tmp.path().join("bus/usb/devices"), "").expect("a file, not a dir");
        let err = read_devices(tmp.path()).expect_err("not a directory");
        assert!(err.to_string().contains("bus/usb/devices"), "{err}");
    }

    /// The machine's own bus; empty in a VM without a USB controller.
    #[test]
    fn real_sysfs_reads() {
        let devices = read_devices(Path::new("/sys")).expect("read /sys");
        for device in &devices {
            assert!(!device.bus_id.contains(':'));
            assert_eq!(device.vendor_id, device.vendor_id.to_ascii_lowercase());
        }
    }
}
