//! `linux-auth`: a [`syslog`](super::syslog) line whose message is read as one of the
//! authentication and account messages of a Linux host.
//!
//! Every line that is valid syslog is parsed (syslog fields written); when the message is
//! one of the kinds below, `event.action`, `event.category`, `event.type`, `event.outcome`
//! and the fields it carries are added. A message of an unknown kind keeps only the
//! syslog fields (no `event.action`): it is not `unparsed`.
//!
//! `event.action` names are stable; rules match on them. `user.name` is the account
//! logging in / acting, `user.target.name` the account acted on, `source.address` the
//! remote host (`source.ip` when it is an address, else `source.domain`).
//!
//! | program | message (abridged) | `event.action` | `event.outcome` | category |
//! | --- | --- | --- | --- | --- |
//! | sshd | `Accepted password\|publickey\|… for U from IP port P ssh2[: KEY]` | `ssh_login` | success | authentication |
//! | sshd | `Failed password\|publickey\|none for [invalid user ]U from IP port P ssh2` | `ssh_login` | failure | authentication |
//! | sshd | `Invalid user U from IP [port P]`, `input_userauth_request: invalid user U [preauth]` | `ssh_invalid_user` | failure | authentication |
//! | sshd | `Connection closed by authenticating user U IP port P [preauth]` (also `invalid user U`) | `ssh_auth_abandoned` | failure | authentication |
//! | sshd | `Connection closed by IP [port P] [preauth]`, `Connection reset by …` | `ssh_connection_closed` | unknown | network |
//! | sshd | `Received disconnect from IP [port P]: CODE: …`, `Disconnected from [user U] IP port P` | `ssh_disconnect` | unknown | network |
//! | sshd | `Disconnecting[:] … Too many authentication failures …`, `maximum authentication attempts exceeded for U from IP port P` | `ssh_too_many_auth_failures` | failure | authentication |
//! | sshd | `Did not receive identification string from IP`, `Bad protocol version identification …`, `banner exchange: …` | `ssh_no_identification` | failure | network |
//! | sshd | `reverse mapping checking getaddrinfo for HOST [IP] failed …`, `Address IP maps to HOST, but this does not map back …` | `ssh_reverse_mapping_failed` | unknown | network |
//! | sshd | `Unable to negotiate with IP port P: …` | `ssh_negotiation_failed` | failure | network |
//! | sshd | `Timeout before authentication for IP port P` | `ssh_auth_timeout` | failure | authentication |
//! | sshd | `Connection from IP port P on IP port P` | `ssh_connection` | unknown | network |
//! | sshd | `message repeated N times: [ MSG]` | the action of `MSG`, `system.auth.repeated: N` | as `MSG` | as `MSG` |
//! | sshd | `PAM N more authentication failure[s]; … rhost=H [user=U]` | `pam_auth_failure` | failure | authentication |
//! | sshd | `PAM service(S) ignoring max retries; N > M` | `pam_max_retries` | failure | authentication |
//! | pam_unix | `authentication failure; logname= uid= euid= tty= ruser= rhost=H [user=U]` | `pam_auth_failure` | failure | authentication |
//! | pam_unix | `check pass; user unknown` | `pam_user_unknown` | failure | authentication |
//! | pam_unix | `session opened for user U[(uid=N)] by …` | `session_opened` | success | session |
//! | pam_unix | `session closed for user U` | `session_closed` | success | session |
//! | pam_unix, passwd | `password changed for U`, `password for 'U' changed by 'A'` | `password_changed` | success | iam |
//! | sudo | `U : TTY=… ; PWD=… ; USER=T ; COMMAND=C` | `sudo_command` | success | process |
//! | sudo | `U : N incorrect password attempts ; …`, `U : a password is required ; …` | `sudo_auth_failure` | failure | authentication |
//! | sudo | `U : user NOT in sudoers ; …` | `sudo_not_in_sudoers` | failure | authentication |
//! | sudo | `U : command not allowed ; …` | `sudo_command_not_allowed` | failure | process |
//! | su | `(to T) U on TTY`, `Successful su for T by U`, `+ TTY U:T` | `su` | success | authentication |
//! | su | `FAILED SU (to T) U on TTY`, `FAILED su for T by U`, `- TTY U:T` | `su` | failure | authentication |
//! | useradd | `new user: name=U, UID=N, …` | `user_created` | success | iam |
//! | useradd, groupadd | `new group: name=G, GID=N`, `group added to /etc/group: name=G, GID=N` | `group_created` | success | iam |
//! | useradd, usermod | `add 'U' to [shadow ]group 'G'` | `user_added_to_group` | success | iam |
//! | userdel | `delete user 'U'` | `user_deleted` | success | iam |
//! | userdel, groupdel | `removed [shadow ]group 'G' owned by 'U'`, `group 'G' removed …` | `group_deleted` | success | iam |
//! | usermod | `change user 'U' …`, `lock user 'U' password`, … | `user_changed` | success | iam |
//! | groupmod | `group changed in … (group G/N, …)` | `group_changed` | success | iam |
//! | systemd-logind | `New session ID of user U.` | `logind_session_new` | success | session |
//! | systemd-logind | `Session ID logged out. …` | `logind_session_logout` | success | session |
//! | systemd-logind | `Removed session ID.` | `logind_session_removed` | success | session |
//! | login | `ROOT LOGIN ON TTY`, `LOGIN ON TTY BY U` | `console_login` | success | authentication |
//! | login | `FAILED LOGIN N FROM TTY FOR U, REASON` | `console_login` | failure | authentication |
//!
//! Extra fields: `system.auth.ssh.{method, signature}`, `system.auth.sudo.{command, pwd,
//! tty}`, `user.effective.name` (sudo's `USER=`), `system.auth.session_id`,
//! `system.auth.repeated`, `system.auth.failures` (PAM's count), `group.{name, id}`,
//! `user.target.id`.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

use super::syslog;
use super::{Fields, Outcome, ParseContext};

// The separators of the sshd login lines, which make up most of a busy auth log, each
// searcher built once: `str::split_once(&str)` and `rfind(&str)` set up a Two-Way
// searcher on every call, a tenth of the agent's CPU on a stream of sshd lines
// (`perf` over `yagura bench agent`).
static FOR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(" for "));
static SSH2_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(" ssh2: "));
static FROM_LAST: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(" from "));
static PORT_LAST: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(" port "));

/// `s.split_once(needle)` with a prebuilt searcher. The needles are ASCII, so both cuts
/// fall on character boundaries.
fn split_first<'a>(s: &'a str, needle: &Finder<'_>) -> Option<(&'a str, &'a str)> {
    let at = needle.find(s.as_bytes())?;
    Some((&s[..at], &s[at + needle.needle().len()..]))
}

/// `s.rsplit_once(needle)` with a prebuilt searcher: the text before the last `needle`
/// and the text after it.
fn split_last<'a>(s: &'a str, needle: &FinderRev<'_>) -> Option<(&'a str, &'a str)> {
    let at = needle.rfind(s.as_bytes())?;
    Some((&s[..at], &s[at + needle.needle().len()..]))
}

/// Parses a syslog line and reads its message as an auth message.
pub(crate) fn parse_line(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    let Some(record) = syslog::parse(line, ctx) else {
        return false;
    };
    syslog::write(&record, out);
    write_message(record.app_name.unwrap_or(""), record.message, out);
    true
}

/// Whether `auto` reads this program's messages as auth messages.
pub(crate) fn is_auth_program(app: &str) -> bool {
    let base = app.split('(').next().unwrap_or(app);
    matches!(
        base,
        "sshd"
            | "sshd-session"
            | "sudo"
            | "su"
            | "login"
            | "-- root"
            | "useradd"
            | "userdel"
            | "usermod"
            | "groupadd"
            | "groupdel"
            | "groupmod"
            | "passwd"
            | "chpasswd"
            | "systemd-logind"
            | "gdm"
            | "CRON"
            | "cron"
    )
}

/// What one auth message says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthEvent<'a> {
    pub action: &'static str,
    pub category: &'static str,
    pub types: &'static [&'static str],
    pub outcome: Option<Outcome>,
    pub user: Option<&'a str>,
    pub target_user: Option<&'a str>,
    pub target_user_id: Option<&'a str>,
    pub effective_user: Option<&'a str>,
    pub source: Option<&'a str>,
    pub source_domain: Option<&'a str>,
    pub port: Option<&'a str>,
    pub ssh_method: Option<&'a str>,
    pub ssh_signature: Option<&'a str>,
    pub sudo_command: Option<&'a str>,
    pub sudo_pwd: Option<&'a str>,
    pub sudo_tty: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub group_name: Option<&'a str>,
    pub group_id: Option<&'a str>,
    pub failures: Option<&'a str>,
    pub repeated: Option<u32>,
}

const START: &[&str] = &["start"];
const END: &[&str] = &["end"];
const INFO: &[&str] = &["info"];
const CONNECTION: &[&str] = &["connection"];
const USER_CREATION: &[&str] = &["user", "creation"];
const USER_DELETION: &[&str] = &["user", "deletion"];
const USER_CHANGE: &[&str] = &["user", "change"];
const GROUP_CREATION: &[&str] = &["group", "creation"];
const GROUP_DELETION: &[&str] = &["group", "deletion"];
const GROUP_CHANGE: &[&str] = &["group", "change"];

fn event(
    action: &'static str,
    category: &'static str,
    types: &'static [&'static str],
    outcome: Outcome,
) -> AuthEvent<'static> {
    AuthEvent {
        action,
        category,
        types,
        outcome: Some(outcome),
        ..AuthEvent::default()
    }
}

/// Writes the fields of the auth message `message` logged by `app`, if it is one.
pub(crate) fn write_message(app: &str, message: &str, out: &mut Fields) {
    if let Some(e) = classify(app, message) {
        write(&e, out);
    }
}

/// Reads an auth message; `None` for messages of other kinds.
pub fn classify<'a>(app: &str, message: &'a str) -> Option<AuthEvent<'a>> {
    if let Some(rest) = message.strip_prefix("pam_unix(") {
        let (_, body) = rest.split_once("): ")?;
        return pam(body);
    }
    let base = app.split('(').next().unwrap_or(app);
    if app.ends_with("(pam_unix)") {
        return pam(message);
    }
    match base {
        "sshd" | "sshd-session" => sshd(message),
        "sudo" => sudo(message),
        "su" => su(message),
        "useradd" | "userdel" | "usermod" | "groupadd" | "groupdel" | "groupmod" | "passwd"
        | "chpasswd" => shadow(message),
        "systemd-logind" => logind(message),
        "login" | "-- root" => login(message),
        _ => None,
    }
}

fn write(e: &AuthEvent<'_>, out: &mut Fields) {
    out.str("event.action", e.action);
    out.strs("event.category", &[e.category]);
    out.strs("event.type", e.types);
    if let Some(o) = e.outcome {
        out.outcome(o);
    }
    out.opt_str("user.name", e.user.filter(|u| !u.is_empty()));
    out.opt_str("user.target.name", e.target_user.filter(|u| !u.is_empty()));
    out.opt_str("user.target.id", e.target_user_id);
    out.opt_str("user.effective.name", e.effective_user);
    if let Some(s) = e.source {
        out.source_address(s);
    }
    out.opt_str("source.domain", e.source_domain);
    if let Some(p) = e.port {
        out.port("source.port", p);
    }
    out.opt_str("system.auth.ssh.method", e.ssh_method);
    out.opt_str("system.auth.ssh.signature", e.ssh_signature);
    out.opt_str("system.auth.sudo.command", e.sudo_command);
    out.opt_str("system.auth.sudo.pwd", e.sudo_pwd);
    out.opt_str("system.auth.sudo.tty", e.sudo_tty);
    out.opt_str("system.auth.session_id", e.session_id);
    out.opt_str("group.name", e.group_name);
    out.opt_str("group.id", e.group_id);
    if let Some(n) = e.failures.and_then(|n| n.parse::<u32>().ok()) {
        out.num("system.auth.failures", i64::from(n));
    }
    if let Some(n) = e.repeated {
        out.num("system.auth.repeated", i64::from(n));
    }
}

/// `IP[ port P]` followed by anything (` [preauth]`, ` ssh2`, `: …`).
fn addr_port(s: &str) -> (&str, Option<&str>) {
    let (addr, rest) = s.split_once(' ').unwrap_or((s, ""));
    let addr = addr.trim_end_matches(':');
    match rest.strip_prefix("port ") {
        Some(p) => {
            let end = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
            (addr, Some(&p[..end]))
        }
        None => (addr, None),
    }
}

/// `[authenticating user U |invalid user U |user U ]IP port P…`: (user, addr, port).
fn user_addr_port(s: &str) -> (Option<&str>, &str, Option<&str>) {
    for prefix in ["authenticating user ", "invalid user ", "user "] {
        if let Some(rest) = s.strip_prefix(prefix) {
            // The user name is attacker-chosen and may hold spaces: the address is the
            // word before " port ".
            if let Some((before, _)) = split_last(rest, &PORT_LAST)
                && let Some((user, addr)) = before.rsplit_once(' ')
            {
                let (_, port) = addr_port(&rest[before.len() - addr.len()..]);
                return (Some(user), addr, port);
            }
        }
    }
    let (addr, port) = addr_port(s);
    (None, addr, port)
}

fn sshd(message: &str) -> Option<AuthEvent<'_>> {
    let msg = message
        .strip_prefix("error: ")
        .or_else(|| message.strip_prefix("fatal: "))
        .unwrap_or(message);
    use Outcome::*;
    if let Some(rest) = msg.strip_prefix("Accepted ") {
        return ssh_login(rest, Success);
    }
    if let Some(rest) = msg.strip_prefix("Failed ") {
        return ssh_login(rest, Failure);
    }
    if let Some(rest) = msg.strip_prefix("Invalid user ") {
        let (user, after) = split_last(rest, &FROM_LAST)?;
        let (addr, port) = addr_port(after);
        let mut e = event("ssh_invalid_user", "authentication", INFO, Failure);
        e.user = Some(user);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("input_userauth_request: invalid user ") {
        let mut e = event("ssh_invalid_user", "authentication", INFO, Failure);
        e.user = Some(rest.strip_suffix(" [preauth]").unwrap_or(rest));
        return Some(e);
    }
    for prefix in ["Connection closed by ", "Connection reset by "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let (user, addr, port) = user_addr_port(rest);
            let mut e = if user.is_some() {
                event("ssh_auth_abandoned", "authentication", INFO, Failure)
            } else {
                event("ssh_connection_closed", "network", END, Unknown)
            };
            e.user = user;
            e.source = Some(addr);
            e.port = port;
            return Some(e);
        }
    }
    if let Some(rest) = msg.strip_prefix("Received disconnect from ") {
        let (addr, port) = addr_port(rest);
        let mut e = event("ssh_disconnect", "network", END, Unknown);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("Disconnected from ") {
        let (user, addr, port) = user_addr_port(rest);
        let mut e = event("ssh_disconnect", "network", END, Unknown);
        e.user = user;
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if msg.contains("Too many authentication failures") {
        let mut e = event(
            "ssh_too_many_auth_failures",
            "authentication",
            INFO,
            Failure,
        );
        if let Some(rest) = msg.strip_prefix("Disconnecting: Too many authentication failures for ")
        {
            e.user = Some(rest.strip_suffix(" [preauth]").unwrap_or(rest));
        } else if let Some(rest) = msg.strip_prefix("Disconnecting ") {
            let rest = rest.split(": Too many").next().unwrap_or(rest);
            let (user, addr, port) = user_addr_port(rest);
            e.user = user;
            e.source = Some(addr);
            e.port = port;
        }
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("maximum authentication attempts exceeded for ") {
        let mut e = event(
            "ssh_too_many_auth_failures",
            "authentication",
            INFO,
            Failure,
        );
        let (user, after) = split_last(rest, &FROM_LAST)?;
        e.user = Some(user.strip_prefix("invalid user ").unwrap_or(user));
        let (addr, port) = addr_port(after);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("message repeated ") {
        let (count, rest) = rest.split_once(" times: [ ")?;
        let inner = rest.strip_suffix(']').unwrap_or(rest);
        let mut e = sshd(inner)?;
        e.repeated = count.parse().ok();
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("Did not receive identification string from ") {
        let (addr, port) = addr_port(rest);
        let mut e = event("ssh_no_identification", "network", CONNECTION, Failure);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("banner exchange: Connection from ") {
        let (addr, port) = addr_port(rest);
        let mut e = event("ssh_no_identification", "network", CONNECTION, Failure);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("Bad protocol version identification ") {
        let (_, after) = split_last(rest, &FROM_LAST)?;
        let (addr, port) = addr_port(after);
        let mut e = event("ssh_no_identification", "network", CONNECTION, Failure);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("reverse mapping checking getaddrinfo for ") {
        let (host, rest) = rest.split_once(" [")?;
        let (ip, _) = rest.split_once(']')?;
        let mut e = event("ssh_reverse_mapping_failed", "network", CONNECTION, Unknown);
        e.source = Some(ip);
        e.source_domain = Some(host);
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("Address ") {
        let (ip, rest) = rest.split_once(" maps to ")?;
        let (host, _) = rest.split_once(", but this does not map back")?;
        let mut e = event("ssh_reverse_mapping_failed", "network", CONNECTION, Unknown);
        e.source = Some(ip);
        e.source_domain = Some(host);
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("Unable to negotiate with ") {
        let (addr, port) = addr_port(rest);
        let mut e = event("ssh_negotiation_failed", "network", CONNECTION, Failure);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("Timeout before authentication for ") {
        let (addr, port) = addr_port(rest);
        let mut e = event("ssh_auth_timeout", "authentication", INFO, Failure);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("Connection from ") {
        let (addr, port) = addr_port(rest);
        let mut e = event("ssh_connection", "network", START, Unknown);
        e.source = Some(addr);
        e.port = port;
        return Some(e);
    }
    if let Some(rest) = msg.strip_prefix("PAM ") {
        if let Some((count, rest)) = rest.split_once(" more authentication failure") {
            let mut e = pam_auth_failure(rest.split_once("; ").map_or("", |(_, kv)| kv));
            e.failures = Some(count);
            return Some(e);
        }
        if rest.starts_with("service(") && rest.contains("ignoring max retries") {
            return Some(event("pam_max_retries", "authentication", INFO, Failure));
        }
    }
    None
}

/// `METHOD for [invalid user ]U from IP port P ssh2[: SIGNATURE]` after Accepted/Failed.
fn ssh_login(rest: &str, outcome: Outcome) -> Option<AuthEvent<'_>> {
    let (method, rest) = split_first(rest, &FOR)?;
    let (user, after) = split_last(rest, &FROM_LAST)?;
    let (addr, port) = addr_port(after);
    let mut e = event("ssh_login", "authentication", START, outcome);
    e.user = Some(user.strip_prefix("invalid user ").unwrap_or(user));
    e.source = Some(addr);
    e.port = port;
    e.ssh_method = Some(method);
    e.ssh_signature = split_first(after, &SSH2_KEY).map(|(_, sig)| sig);
    Some(e)
}

/// `authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=H  user=U`.
fn pam_auth_failure(kv: &str) -> AuthEvent<'_> {
    let mut e = event("pam_auth_failure", "authentication", INFO, Outcome::Failure);
    for pair in kv.split_ascii_whitespace() {
        if let Some(v) = pair.strip_prefix("rhost=") {
            e.source = (!v.is_empty()).then_some(v);
        } else if let Some(v) = pair.strip_prefix("user=") {
            e.user = (!v.is_empty()).then_some(v);
        }
    }
    e
}

/// The body of a pam_unix message (after `pam_unix(service:type): `).
fn pam(body: &str) -> Option<AuthEvent<'_>> {
    use Outcome::*;
    if let Some(kv) = body.strip_prefix("authentication failure; ") {
        return Some(pam_auth_failure(kv));
    }
    if body.starts_with("check pass; user unknown") {
        return Some(event("pam_user_unknown", "authentication", INFO, Failure));
    }
    if let Some(rest) = body.strip_prefix("session opened for user ") {
        let mut e = event("session_opened", "session", START, Success);
        e.user = Some(account_name(rest));
        return Some(e);
    }
    if let Some(rest) = body.strip_prefix("session closed for user ") {
        let mut e = event("session_closed", "session", END, Success);
        e.user = Some(account_name(rest));
        return Some(e);
    }
    if let Some(rest) = body.strip_prefix("password changed for ") {
        let mut e = event("password_changed", "iam", USER_CHANGE, Success);
        e.target_user = Some(rest.trim_end());
        return Some(e);
    }
    None
}

/// `alice(uid=1000) by …` or `alice by …` → `alice`.
fn account_name(s: &str) -> &str {
    let end = s.find(['(', ' ']).unwrap_or(s.len());
    &s[..end]
}

fn sudo(message: &str) -> Option<AuthEvent<'_>> {
    use Outcome::*;
    let (user, rest) = message.trim_start().split_once(" : ")?;
    let (problem, fields) = if rest.starts_with("TTY=") || rest.starts_with("PWD=") {
        (None, rest)
    } else {
        match rest.split_once(" ; ") {
            Some((p, f)) => (Some(p), f),
            None => (Some(rest), ""),
        }
    };
    let mut e = match problem {
        None => event("sudo_command", "process", START, Success),
        Some(p) if p.contains("incorrect password attempt") || p == "a password is required" => {
            event("sudo_auth_failure", "authentication", INFO, Failure)
        }
        Some("user NOT in sudoers") => {
            event("sudo_not_in_sudoers", "authentication", INFO, Failure)
        }
        Some("command not allowed") => event("sudo_command_not_allowed", "process", START, Failure),
        Some(_) => return None,
    };
    e.user = Some(user);
    let mut rest = fields;
    while !rest.is_empty() {
        if let Some(command) = rest.strip_prefix("COMMAND=") {
            e.sudo_command = Some(command);
            break;
        }
        let (field, after) = rest.split_once(" ; ").unwrap_or((rest, ""));
        if let Some((key, value)) = field.split_once('=') {
            match key {
                "TTY" => e.sudo_tty = Some(value),
                "PWD" => e.sudo_pwd = Some(value),
                "USER" => e.effective_user = Some(value),
                _ => {}
            }
        }
        rest = after;
    }
    Some(e)
}

fn su(message: &str) -> Option<AuthEvent<'_>> {
    use Outcome::*;
    let (outcome, rest) = if let Some(rest) = message.strip_prefix("FAILED SU ") {
        (Failure, rest)
    } else {
        (Success, message)
    };
    if let Some(rest) = rest.strip_prefix("(to ") {
        let (target, rest) = rest.split_once(") ")?;
        let user = rest.split(" on ").next().unwrap_or(rest);
        let mut e = event("su", "authentication", START, outcome);
        e.user = Some(user);
        e.target_user = Some(target);
        return Some(e);
    }
    for (prefix, outcome) in [("Successful su for ", Success), ("FAILED su for ", Failure)] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (target, user) = rest.split_once(" by ")?;
            let mut e = event("su", "authentication", START, outcome);
            e.user = Some(user);
            e.target_user = Some(target);
            return Some(e);
        }
    }
    for (prefix, outcome) in [("+ ", Success), ("- ", Failure)] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (_, pair) = rest.split_once(' ')?;
            let (user, target) = pair.split_once(':')?;
            let mut e = event("su", "authentication", START, outcome);
            e.user = Some(user);
            e.target_user = Some(target);
            return Some(e);
        }
    }
    None
}

/// The value of `key=` in a `key=value, key=value` list.
fn comma_field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.split(", ").find_map(|f| {
        let (k, v) = f.split_once('=')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// The first `'quoted'` word of `s` and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let (_, rest) = s.split_once('\'')?;
    rest.split_once('\'')
}

fn shadow(message: &str) -> Option<AuthEvent<'_>> {
    use Outcome::*;
    if let Some(rest) = message.strip_prefix("new user: ") {
        let mut e = event("user_created", "iam", USER_CREATION, Success);
        e.target_user = comma_field(rest, "name");
        e.target_user_id = comma_field(rest, "UID");
        return Some(e);
    }
    for prefix in ["new group: ", "group added to "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let fields = rest.split_once(": ").map_or(rest, |(_, f)| f);
            let fields = if prefix == "new group: " {
                rest
            } else {
                fields
            };
            let mut e = event("group_created", "iam", GROUP_CREATION, Success);
            e.group_name = comma_field(fields, "name");
            e.group_id = comma_field(fields, "GID");
            return Some(e);
        }
    }
    if let Some(rest) = message.strip_prefix("add ") {
        let (user, rest) = quoted(rest)?;
        let (group, _) = quoted(rest)?;
        let mut e = event("user_added_to_group", "iam", GROUP_CHANGE, Success);
        e.target_user = Some(user);
        e.group_name = Some(group);
        return Some(e);
    }
    if let Some(rest) = message.strip_prefix("delete user ") {
        let mut e = event("user_deleted", "iam", USER_DELETION, Success);
        e.target_user = quoted(rest).map(|(u, _)| u);
        return Some(e);
    }
    if let Some(rest) = message
        .strip_prefix("removed group ")
        .or_else(|| message.strip_prefix("removed shadow group "))
    {
        let mut e = event("group_deleted", "iam", GROUP_DELETION, Success);
        e.group_name = quoted(rest).map(|(g, _)| g);
        return Some(e);
    }
    if let Some(rest) = message.strip_prefix("group ")
        && let Some((group, after)) = quoted(rest)
        && after.starts_with(" removed")
    {
        let mut e = event("group_deleted", "iam", GROUP_DELETION, Success);
        e.group_name = Some(group);
        return Some(e);
    }
    if let Some(rest) = message.strip_prefix("group changed in ") {
        let mut e = event("group_changed", "iam", GROUP_CHANGE, Success);
        if let Some((_, g)) = rest.split_once("(group ") {
            let g = g.split([',', ')']).next().unwrap_or(g);
            let (name, id) = g.split_once('/').unwrap_or((g, ""));
            e.group_name = Some(name);
            e.group_id = (!id.is_empty()).then_some(id);
        }
        return Some(e);
    }
    if let Some(rest) = message.strip_prefix("password for ") {
        let mut e = event("password_changed", "iam", USER_CHANGE, Success);
        e.target_user = quoted(rest).map(|(u, _)| u);
        return Some(e);
    }
    if message.starts_with("change user ")
        || message.starts_with("lock user ")
        || message.starts_with("unlock user ")
    {
        let (user, _) = quoted(message)?;
        let is_password = message.ends_with(" password");
        let mut e = if is_password && message.starts_with("change user ") {
            event("password_changed", "iam", USER_CHANGE, Success)
        } else {
            event("user_changed", "iam", USER_CHANGE, Success)
        };
        e.target_user = Some(user);
        return Some(e);
    }
    None
}

fn logind(message: &str) -> Option<AuthEvent<'_>> {
    use Outcome::*;
    if let Some(rest) = message.strip_prefix("New session ") {
        let (id, user) = rest.split_once(" of user ")?;
        let mut e = event("logind_session_new", "session", START, Success);
        e.session_id = Some(id);
        e.user = Some(user.strip_suffix('.').unwrap_or(user));
        return Some(e);
    }
    if let Some(rest) = message.strip_prefix("Session ") {
        let (id, _) = rest.split_once(" logged out.")?;
        let mut e = event("logind_session_logout", "session", END, Success);
        e.session_id = Some(id);
        return Some(e);
    }
    if let Some(rest) = message.strip_prefix("Removed session ") {
        let mut e = event("logind_session_removed", "session", END, Success);
        e.session_id = Some(rest.strip_suffix('.').unwrap_or(rest));
        return Some(e);
    }
    None
}

fn login(message: &str) -> Option<AuthEvent<'_>> {
    use Outcome::*;
    if message.starts_with("ROOT LOGIN ON ") {
        let mut e = event("console_login", "authentication", START, Success);
        e.user = Some("root");
        return Some(e);
    }
    if let Some(rest) = message.strip_prefix("LOGIN ON ") {
        let (_, user) = rest.split_once(" BY ")?;
        let mut e = event("console_login", "authentication", START, Success);
        e.user = Some(user.split(' ').next().unwrap_or(user));
        return Some(e);
    }
    if let Some(rest) = message.strip_prefix("FAILED LOGIN ") {
        let (_, rest) = rest.split_once(" FOR ")?;
        let user = rest.split(", ").next().unwrap_or(rest).trim_matches('\'');
        let mut e = event("console_login", "authentication", START, Failure);
        e.user = Some(user);
        return Some(e);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_with_spaces_do_not_shift_the_address() {
        let e = classify(
            "sshd",
            "Failed password for invalid user a b from 10.0.0.1 port 22 ssh2",
        )
        .expect("known");
        assert_eq!(e.user, Some("a b"));
        assert_eq!(e.source, Some("10.0.0.1"));
        assert_eq!(e.port, Some("22"));
        let e = classify(
            "sshd",
            "Connection closed by authenticating user x y 10.0.0.2 port 5 [preauth]",
        )
        .expect("known");
        assert_eq!(
            (e.user, e.source, e.port),
            (Some("x y"), Some("10.0.0.2"), Some("5"))
        );
    }

    #[test]
    fn sudo_command_may_contain_separators() {
        let e = classify(
            "sudo",
            "  alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/sh -c 'a ; b'",
        )
        .expect("known");
        assert_eq!(e.action, "sudo_command");
        assert_eq!(e.sudo_command, Some("/bin/sh -c 'a ; b'"));
        assert_eq!(e.effective_user, Some("root"));
    }
}
