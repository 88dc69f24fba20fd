//! `mounts`: storage — the mounted filesystems with their size and free space, and the
//! block devices (disks) behind them.
//!
//! * Mounts come from `<proc>/self/mounts` (the agent's mount namespace): `device mount
//!   point type options 0 0`, one per line, with space, tab, newline and backslash in the
//!   first four fields written as octal escapes (`\040`, `\011`, `\012`, `\134`). Kernel
//!   pseudo filesystems (`proc`, `sysfs`, `cgroup*`, `devpts`, …; see [`is_pseudo`]) are
//!   left out: they are the same on every Linux host and say nothing about its storage.
//!   `tmpfs` stays, as do `overlay` and `squashfs`: where a host keeps `/tmp` or
//!   `/dev/shm`, and with which options (`noexec`), is inventory. Sizes come from
//!   `statvfs(2)` (through `rustix`, so our code stays free of `unsafe`).
//! * Disks come from `<sys>/block/<dev>/`: `size` (in 512-byte sectors, whatever the
//!   device's own sector size), `removable`, `queue/rotational`, `device/model`,
//!   `device/vendor` and the serial (`serial` or `device/serial`, which NVMe and virtio
//!   have). A virtual device (no `device` link: loop, ram, zram, nbd) of size 0 is not set
//!   up, and left out; an empty CD drive (a real device of size 0) is kept.
//!
//! Both readers never fail and never panic: an unreadable table is empty, an unreadable
//! attribute is `None`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// What is mounted: a device (`/dev/sda1`), a server path (`srv:/export`) or a name
    /// (`tmpfs`, `overlay`).
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    /// The mount options in the kernel's order (`rw`, `nosuid`, `relatime`, …).
    pub options: Vec<String>,
    /// Size and space available to unprivileged users, from `statvfs`; `None` for
    /// network and FUSE filesystems (see [`sizes_are_safe`]) and when `statvfs` fails.
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

/// One block device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Disk {
    /// The kernel's name (`sda`, `nvme0n1`, `vda`, `loop3`).
    pub name: String,
    /// `size` × 512: the kernel counts in 512-byte sectors whatever the device's sector
    /// size.
    pub size_bytes: Option<u64>,
    pub removable: Option<bool>,
    /// `queue/rotational`: `true` for spinning disks (and what claims to be one).
    pub rotational: Option<bool>,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    /// Backed by a device on a bus (a `device` link), not loop, ram, zram, dm or md.
    pub physical: bool,
}

/// Kernel filesystems that are no storage: the same on every host, and many of them (one
/// `cgroup` per controller). `autofs` is left out too: its trigger point says nothing,
/// the filesystem mounted on it is listed itself, and `statvfs` on it would mount it.
pub fn is_pseudo(fs_type: &str) -> bool {
    matches!(
        fs_type,
        "proc"
            | "sysfs"
            | "devtmpfs"
            | "devpts"
            | "mqueue"
            | "debugfs"
            | "tracefs"
            | "securityfs"
            | "pstore"
            | "bpf"
            | "configfs"
            | "fusectl"
            | "hugetlbfs"
            | "autofs"
            | "binfmt_misc"
            | "efivarfs"
            | "rpc_pipefs"
            | "nsfs"
            | "selinuxfs"
            | "nfsd"
    ) || fs_type.starts_with("cgroup")
}

/// Whether `statvfs` on a filesystem of this type returns promptly. On network
/// filesystems it asks the server, and on a hard-mounted NFS share whose server is gone it
/// never returns; a FUSE filesystem (`fuse.sshfs`, …) asks its daemon, which may hang
/// too. A stuck inventory thread would stop all inventory, so these get no sizes.
/// `fuseblk` (NTFS, exFAT on a local disk) is FUSE too: no sizes either.
pub fn sizes_are_safe(fs_type: &str) -> bool {
    !(matches!(
        fs_type,
        "nfs"
            | "nfs4"
            | "cifs"
            | "smb3"
            | "smbfs"
            | "ncpfs"
            | "ceph"
            | "glusterfs"
            | "lustre"
            | "gpfs"
            | "afs"
            | "9p"
            | "virtiofs"
            | "davfs"
            | "fuse"
            | "fuseblk"
    ) || fs_type.starts_with("fuse."))
}

/// A field of `/proc/self/mounts` with its octal escapes (`\` and three octal digits)
/// decoded; a backslash not followed by three octal digits stays as it is. Bytes that are
/// not UTF-8 (a mount point named in another encoding) become U+FFFD.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            // `\777` is more than a byte: not an escape the kernel writes.
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts listed in `text` (the format of `/proc/self/mounts`), pseudo filesystems
/// left out, without sizes. A mount point mounted over (twice in the table) is kept once,
/// as its last entry: the one on top, which is what a path there reaches. Lines with
/// fewer than four fields are skipped.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(device), Some(mount_point), Some(fs_type), Some(options)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let fs_type = unescape(fs_type);
        if is_pseudo(&fs_type) {
            continue;
        }
        let mount = Mount {
            device: unescape(device),
            mount_point: unescape(mount_point),
            fs_type,
            options: options.split(',').map(unescape).collect(),
            total_bytes: None,
            available_bytes: None,
        };
        mounts.retain(|m| m.mount_point != mount.mount_point);
        mounts.push(mount);
    }
    mounts
}

/// `(total, available)` bytes of the filesystem at `path`.
fn sizes(path: &Path) -> Option<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    // `f_frsize` is the unit of the block counts (`f_bsize` only the preferred I/O size);
    // old kernels leave it zero.
    let unit = if stat.f_frsize > 0 {
        stat.f_frsize
    } else {
        stat.f_bsize
    };
    Some((
        stat.f_blocks.saturating_mul(unit),
        stat.f_bavail.saturating_mul(unit),
    ))
}

/// Where `mount_point` is under `fs_root` (`/` on a real system, a fixture tree in tests).
fn under(fs_root: &Path, mount_point: &str) -> PathBuf {
    fs_root.join(mount_point.trim_start_matches('/'))
}

/// The mounts of `<proc_root>/self/mounts` (see [`parse_mounts`]), with sizes from
/// `statvfs` on each mount point under `fs_root` where [`sizes_are_safe`]. Nothing if the
/// table cannot be read.
pub fn read_mounts(proc_root: &Path, fs_root: &Path) -> Vec<Mount> {
    let Ok(bytes) = std::fs::read(proc_root.join("self").join("mounts")) else {
        return Vec::new();
    };
    let mut mounts = parse_mounts(&String::from_utf8_lossy(&bytes));
    for mount in &mut mounts {
        if sizes_are_safe(&mount.fs_type)
            && let Some((total, available)) = sizes(&under(fs_root, &mount.mount_point))
        {
            mount.total_bytes = Some(total);
            mount.available_bytes = Some(available);
        }
    }
    mounts
}

/// An attribute file's trimmed text; `None` if missing, unreadable, empty or not UTF-8.
fn attribute(dir: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(dir.join(name)).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn flag(dir: &Path, name: &str) -> Option<bool> {
    match attribute(dir, name).as_deref() {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    }
}

/// One entry of `block/`; `None` for a virtual device of size 0 or one that has gone.
fn disk(dir: &Path, name: &str) -> Option<Disk> {
    if !dir.is_dir() {
        return None;
    }
    let physical = dir.join("device").exists();
    let size_bytes = attribute(dir, "size")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|sectors| sectors.saturating_mul(512));
    if !physical && size_bytes.unwrap_or(0) == 0 {
        return None;
    }
    Some(Disk {
        name: name.to_string(),
        size_bytes,
        removable: flag(dir, "removable"),
        rotational: flag(&dir.join("queue"), "rotational"),
        model: attribute(dir, "device/model"),
        vendor: attribute(dir, "device/vendor"),
        serial: attribute(dir, "serial").or_else(|| attribute(dir, "device/serial")),
        physical,
    })
}

/// The block devices under `<sys_root>/block`, sorted by name (see the module doc for
/// what is left out). Nothing if the directory cannot be listed.
pub fn read_disks(sys_root: &Path) -> Vec<Disk> {
    let Ok(entries) = std::fs::read_dir(sys_root.join("block")) else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            disk(&entry.path(), name.to_str()?)
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A host's table: the root disk, pseudo filesystems, `/dev/shm` mounted twice, a
    /// mount point with a space, a tab and a backslash, an NFS share, a FUSE mount and a
    /// short line.
    const MOUNTS: &str = "\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
devtmpfs /dev devtmpfs rw,nosuid,size=4096k,nr_inodes=1024,mode=755 0 0
/dev/sda2 / ext4 rw,relatime,errors=remount-ro 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev,noexec 0 0
/dev/sdb1 /media/alice/My\\040Disk\\011x\\134y vfat rw,nosuid,nodev,uid=1000 0 0
srv:/export /mnt/nfs nfs4 rw,relatime,vers=4.2,hard 0 0
sshfs#alice@h: /mnt/ssh fuse.sshfs rw,nosuid,nodev 0 0
systemd-1 /proc/sys/fs/binfmt_misc autofs rw,relatime,fd=29 0 0
broken line
";

    #[test]
    fn parse_the_table() {
        let mounts = parse_mounts(MOUNTS);
        let points: Vec<&str> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(
            points,
            [
                "/",
                "/dev/shm",
                "/media/alice/My Disk\tx\\y",
                "/mnt/nfs",
                "/mnt/ssh"
            ],
            "pseudo filesystems and the short line left out"
        );
        let root = &mounts[0];
        assert_eq!(
            (root.device.as_str(), root.fs_type.as_str()),
            ("/dev/sda2", "ext4")
        );
        assert_eq!(root.options, ["rw", "relatime", "errors=remount-ro"]);
        assert!(
            mounts[1].options.contains(&"noexec".to_string()),
            "the mount on top: {:?}",
            mounts[1].options
        );
        assert_eq!(mounts[2].device, "/dev/sdb1");
        assert!(mounts.iter().all(|m| m.total_bytes.is_none()));
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"a\040b"), "a b");
        assert_eq!(unescape(r"\011\012\134"), "\t\n\\");
        assert_eq!(unescape(r"end\04"), r"end\04", "too short");
        assert_eq!(unescape(r"x\089"), r"x\089", "not octal");
        assert_eq!(unescape(r"x\777"), r"x\777", "more than a byte");
        assert_eq!(unescape(r"\303\251t\303\251"), "été", "UTF-8 bytes");
        assert_eq!(unescape(r"\377"), "\u{fffd}", "not UTF-8");
        assert_eq!(unescape(r"\"), r"\");
    }

    #[test]
    fn which_filesystems() {
        for pseudo in ["proc", "sysfs", "cgroup", "cgroup2", "devpts", "autofs"] {
            assert!(is_pseudo(pseudo), "{pseudo}");
        }
        for kept in [
            "ext4", "xfs", "btrfs", "tmpfs", "overlay", "squashfs", "nfs4",
        ] {
            assert!(!is_pseudo(kept), "{kept}");
        }
        assert!(sizes_are_safe("ext4") && sizes_are_safe("tmpfs"));
        for remote in ["nfs", "nfs4", "cifs", "fuse.sshfs", "fuseblk"] {
            assert!(!sizes_are_safe(remote), "{remote}");
        }
    }

    /// Sizes come from `statvfs` under the filesystem root; network and FUSE mounts get
    /// none, nor does a mount point that does not exist.
    #[test]
    fn read_with_sizes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let proc = tmp.path().join("proc");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(proc.join("self")).expect("proc");
        std::fs::create_dir_all(root.join("media/alice/My Disk\tx\\y")).expect("media");
        std::fs::create_dir_all(root.join("mnt/nfs")).expect("nfs");
        std::fs::write(proc.join("self/mounts"), MOUNTS).expect("mounts");
        let mounts = read_mounts(&proc, &root);
        let sized: Vec<&str> = mounts
            .iter()
            .filter(|m| m.total_bytes.is_some())
            .map(|m| m.mount_point.as_str())
            .collect();
        assert_eq!(
            sized,
            ["/", "/media/alice/My Disk\tx\\y"],
            "/dev/shm does not exist under the root; NFS and sshfs are not asked"
        );
        let root_fs = &mounts[0];
        let (total, available) = (
            root_fs.total_bytes.expect("total"),
            root_fs.available_bytes.expect("available"),
        );
        assert!(total > 0 && available <= total, "{total} {available}");

        assert!(read_mounts(&tmp.path().join("no-proc"), &root).is_empty());
    }

    /// On this machine: `/` is mounted and has a size.
    #[test]
    fn real_root_mount() {
        let mounts = read_mounts(Path::new("/proc"), Path::new("/"));
        let root = mounts
            .iter()
            .find(|m| m.mount_point == "/")
            .expect("/ mounted");
        assert!(root.total_bytes.is_some_and(|t| t > 0), "{root:?}");
        assert!(mounts.iter().all(|m| !is_pseudo(&m.fs_type)));
    }

    fn write(dir: &Path, attributes: &[(&str, &str)]) {
        for (name, value) in attributes {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, format!("{value}\n")).expect("attribute");
        }
    }

    /// A SATA disk, an NVMe disk, a virtio disk, an empty CD drive, loop devices in use
    /// and not, an unused ram disk, and a broken link.
    #[test]
    fn fixture_tree_disks() {
        let tmp = tempfile::tempdir().expect("tmp");
        let block = tmp.path().join("block");
        let disk = |name: &str, attributes: &[(&str, &str)], physical: bool| {
            let dir = block.join(name);
            std::fs::create_dir_all(&dir).expect("dir");
            write(&dir, attributes);
            if physical {
                std::fs::create_dir_all(dir.join("device")).expect("device");
            }
        };
        disk(
            "sda",
            &[
                ("size", "1953525168"),
                ("removable", "0"),
                ("queue/rotational", "1"),
                ("device/model", "ST1000DM010-2EP1  "),
                ("device/vendor", "ATA     "),
            ],
            true,
        );
        disk(
            "nvme0n1",
            &[
                ("size", "1000215216"),
                ("removable", "0"),
                ("queue/rotational", "0"),
                ("device/model", "Samsung SSD 980 PRO 1TB"),
                ("device/serial", "S5GXNF0R123456"),
            ],
            true,
        );
        disk(
            "vda",
            &[
                ("size", "536870912"),
                ("serial", "disk-1"),
                ("removable", "x"),
            ],
            true,
        );
        disk("sr0", &[("size", "0"), ("removable", "1")], true);
        disk("loop0", &[("size", "0")], false);
        disk("loop1", &[("size", "104536")], false);
        disk("ram0", &[("size", "0")], false);
        disk("zram0", &[], false);
        std::os::unix::fs::symlink(tmp.path().join("gone"), block.join("sdz")).expect("link");

        let disks = read_disks(tmp.path());
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["loop1", "nvme0n1", "sda", "sr0", "vda"]);

        let sda = &disks[2];
        assert_eq!(sda.size_bytes, Some(1_953_525_168 * 512));
        assert_eq!((sda.removable, sda.rotational), (Some(false), Some(true)));
        assert_eq!(sda.model.as_deref(), Some("ST1000DM010-2EP1"), "trimmed");
        assert_eq!(sda.vendor.as_deref(), Some("ATA"));
        assert_eq!(sda.serial, None);
        assert!(sda.physical);

        let nvme = &disks[1];
        assert_eq!(nvme.rotational, Some(false));
        assert_eq!(nvme.serial.as_deref(), Some("S5GXNF0R123456"));

        let vda = &disks[4];
        assert_eq!(vda.serial.as_deref(), Some("disk-1"));
        assert_eq!(vda.removable, None, "not 0 or 1");
        assert_eq!(vda.rotational, None);

        let sr0 = &disks[3];
        assert_eq!((sr0.size_bytes, sr0.removable), (Some(0), Some(true)));
        let loop1 = &disks[0];
        assert!(!loop1.physical && loop1.size_bytes == Some(104_536 * 512));

        assert!(read_disks(&tmp.path().join("nothing")).is_empty());
    }

    /// On this machine: every disk listed is a real device or a virtual one in use.
    #[test]
    fn real_disks_read() {
        for disk in read_disks(Path::new("/sys")) {
            assert!(
                disk.physical || disk.size_bytes.unwrap_or(0) > 0,
                "{disk:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_mounts_never_panics(text in "(?s).{0,400}") {
            for mount in parse_mounts(&text) {
                prop_assert!(!is_pseudo(&mount.fs_type));
            }
        }

        #[test]
        fn damaged_lines_never_panic(line in crate::inventory::spliced_fixture_lines(&[MOUNTS])) {
            let _ = parse_mounts(&line);
        }

        #[test]
        fn unescape_never_panics(field in r"(?s)[\\0-9a-z ]{0,40}") {
            let _ = unescape(&field);
        }
    }
}
