//! Local users and groups, from `<etc_root>/passwd` and `<etc_root>/group`.
//!
//! Only the local files are read, not NSS: the inventory reports the accounts defined on
//! this host (where a backdoor account would be added), and a directory service being
//! down must not make the inventory hang. Users of a directory service are absent, so
//! [`user_names`] may not name every uid a process runs as.
//!
//! Lines that are not valid entries (comments, blank lines, wrong field counts,
//! non-numeric ids, NIS `+`/`-` compat entries) are skipped, never an error: one bad
//! line must not hide the other accounts.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// One entry of `passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    pub home: String,
    /// The login shell as written (empty means `/bin/sh`; `nologin` and `false` mean no
    /// interactive login).
    pub shell: String,
}

/// One entry of `group`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    /// Supplementary members, as listed (users whose primary group this is are not
    /// listed here: see [`User::gid`]).
    pub members: Vec<String>,
}

/// An accounts file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {cause}", path.display())]
pub struct AccountsError {
    pub path: PathBuf,
    pub cause: io::Error,
}

/// Reads `<etc_root>/passwd` (normally `/etc/passwd`), in file order.
pub fn read_users(etc_root: &Path) -> Result<Vec<User>, AccountsError> {
    read_lossy(&etc_root.join("passwd")).map(|text| parse_passwd(&text))
}

/// Reads `<etc_root>/group` (normally `/etc/group`), in file order.
pub fn read_groups(etc_root: &Path) -> Result<Vec<Group>, AccountsError> {
    read_lossy(&etc_root.join("group")).map(|text| parse_group(&text))
}

/// uid → user name. When several entries share a uid (`root` and `toor`), the first
/// one wins, as it does for `getpwuid`.
pub fn user_names(users: &[User]) -> HashMap<u32, String> {
    let mut names = HashMap::with_capacity(users.len());
    for user in users {
        names.entry(user.uid).or_insert_with(|| user.name.clone());
    }
    names
}

/// The entries of a `passwd` file; invalid lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<User> {
    text.lines().filter_map(parse_passwd_line).collect()
}

/// The entries of a `group` file; invalid lines are skipped.
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines().filter_map(parse_group_line).collect()
}

/// `name:password:uid:gid:gecos:home:shell`.
pub fn parse_passwd_line(line: &str) -> Option<User> {
    let fields = split_fields::<7>(line)?;
    let [name, _password, uid, gid, _gecos, home, shell] = fields;
    Some(User {
        name: entry_name(name)?.to_string(),
        uid: id(uid)?,
        gid: id(gid)?,
        home: home.to_string(),
        shell: shell.to_string(),
    })
}

/// `name:password:gid:member,member,…`.
pub fn parse_group_line(line: &str) -> Option<Group> {
    let [name, _password, gid, members] = split_fields::<4>(line)?;
    Some(Group {
        name: entry_name(name)?.to_string(),
        gid: id(gid)?,
        members: members
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// Exactly `N` colon-separated fields of a line that is not a comment.
fn split_fields<const N: usize>(line: &str) -> Option<[&str; N]> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim_start().starts_with('#') {
        return None;
    }
    let mut fields = [""; N];
    let mut parts = line.split(':');
    for field in &mut fields {
        *field = parts.next()?;
    }
    parts.next().is_none().then_some(fields)
}

/// An account name: not empty, no white space, not a NIS compat entry (`+name`, `-name`,
/// `+@netgroup`), which refers to accounts defined elsewhere.
fn entry_name(name: &str) -> Option<&str> {
    let valid =
        !name.is_empty() && !name.starts_with(['+', '-']) && !name.chars().any(char::is_whitespace);
    valid.then_some(name)
}

/// A decimal uid or gid (no sign, no blanks).
fn id(field: &str) -> Option<u32> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

fn read_lossy(path: &Path) -> Result<String, AccountsError> {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|cause| AccountsError {
            path: path.to_path_buf(),
            cause,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PASSWD: &str = "\
# local accounts
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

toor:x:0:0:second root:/root:/bin/sh
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
nosh:x:1001:1001::/home/nosh:
broken:x:1002:1002:/home/broken:/bin/sh
negative:x:-1:1003::/:/bin/sh
big:x:4294967296:0::/:/bin/sh
+::::::
-bob::::::
:x:5:5::/:/bin/sh
sp ace:x:6:6::/:/bin/sh
crlf:x:1003:1003::/home/crlf:/bin/sh\r
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";

    const GROUP: &str = "\
root:x:0:
sudo:x:27:alice,bob
# comment
adm:x:4:syslog, alice ,
docker:x:999:
bad:x:abc:alice
short:x:5
+:::";

    fn user(name: &str, uid: u32, gid: u32, home: &str, shell: &str) -> User {
        User {
            name: name.into(),
            uid,
            gid,
            home: home.into(),
            shell: shell.into(),
        }
    }

    #[test]
    fn passwd_skips_comments_and_malformed_lines() {
        assert_eq!(
            parse_passwd(PASSWD),
            vec![
                user("root", 0, 0, "/root", "/bin/bash"),
                user("daemon", 1, 1, "/usr/sbin", "/usr/sbin/nologin"),
                user("toor", 0, 0, "/root", "/bin/sh"),
                user("alice", 1000, 1000, "/home/alice", "/bin/bash"),
                user("nosh", 1001, 1001, "/home/nosh", ""),
                user("crlf", 1003, 1003, "/home/crlf", "/bin/sh"),
                user("nobody", 65534, 65534, "/nonexistent", "/usr/sbin/nologin"),
            ]
        );
    }

    #[test]
    fn group_members_are_split() {
        let groups = parse_group(GROUP);
        let summary: Vec<(&str, u32, Vec<&str>)> = groups
            .iter()
            .map(|g| {
                (
                    g.name.as_str(),
                    g.gid,
                    g.members.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("root", 0, vec![]),
                ("sudo", 27, vec!["alice", "bob"]),
                ("adm", 4, vec!["syslog", "alice"]),
                ("docker", 999, vec![]),
            ]
        );
    }

    #[test]
    fn first_name_of_a_uid_wins() {
        let names = user_names(&parse_passwd(PASSWD));
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&1000).map(String::as_str), Some("alice"));
        assert_eq!(names.get(&1002), None);
        assert_eq!(names.len(), 6);
    }

    #[test]
    fn reads_a_fixture_etc() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("passwd"), PASSWD).expect("passwd");
        let mut group = GROUP.as_bytes().to_vec();
        group.extend_from_slice(b"\nlatin1:x:77:caf\xe9\n");
        std::fs::write(dir.path().join("group"), group).expect("group");
        let users = read_users(dir.path()).expect("users");
        assert_eq!(users.len(), 7);
        let groups = read_groups(dir.path()).expect("groups");
        let latin1 = groups.last().expect("a group");
        assert_eq!(latin1.gid, 77);
        assert_eq!(latin1.members, vec!["caf\u{fffd}"]);
    }

    #[test]
    fn missing_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_users(dir.path()).expect_err("no passwd");
        assert_eq!(err.path, dir.path().join("passwd"));
        assert_eq!(err.cause.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("passwd"), "{err}");
        assert!(read_groups(dir.path()).is_err());
    }

    /// The machine's own `/etc`: root exists with uid 0.
    #[test]
    fn reads_this_machines_accounts() {
        let users = read_users(Path::new("/etc")).expect("/etc/passwd");
        let root = users.iter().find(|u| u.name == "root").expect("root");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(user_names(&users).get(&0).map(String::as_str), Some("root"));
        let groups = read_groups(Path::new("/etc")).expect("/etc/group");
        assert!(groups.iter().any(|g| g.name == "root" && g.gid == 0));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in any::<String>()) {
            let _ = parse_passwd(&text);
            let _ = parse_group(&text);
        }

        #[test]
        fn colon_heavy_input_never_panics(
            text in proptest::collection::vec(prop_oneof![
                Just(":"), Just("\n"), Just("0"), Just("+"), Just("#"), Just(","), Just("a"),
                Just("\r"), Just(" "), Just("4294967295"), Just("\u{e9}")
            ], 0..60)
        ) {
            let text = text.concat();
            let users = parse_passwd(&text);
            let groups = parse_group(&text);
            prop_assert!(users.iter().all(|u| !u.name.is_empty()));
            prop_assert!(groups.iter().all(|g| g.members.iter().all(|m| !m.is_empty())));
        }

        #[test]
        fn valid_entries_round_trip(
            name in "[a-z_][a-z0-9_-]{0,31}",
            uid in any::<u32>(),
            gid in any::<u32>(),
            home in "/[a-z/]{0,20}",
            shell in "(/[a-z]{1,8}){0,3}",
            members in proptest::collection::vec("[a-z][a-z0-9]{0,8}", 0..5),
        ) {
            let line = format!("{name}:x:{uid}:{gid}:gecos, with spaces:{home}:{shell}");
            prop_assert_eq!(
                parse_passwd_line(&line),
                Some(User { name: name.clone(), uid, gid, home, shell })
            );
            let line = format!("{name}:x:{gid}:{}", members.join(","));
            prop_assert_eq!(parse_group_line(&line), Some(Group { name, gid, members }));
        }
    }
}
