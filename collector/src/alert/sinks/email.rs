//! Email: a plain-text mail per notification, sent over SMTP with lettre.
//!
//! ```toml
//! [alert.destinations.soc-mail]
//! type = "email"
//! smtp_host = "smtp.example.com"
//! smtp_security = "starttls"        # or "tls" (port 465), or "none" (loopback relay only)
//! username = "yagura"
//! password = "env:SMTP_PASSWORD"
//! from = "Yagura <yagura@example.com>"
//! to = ["soc@example.com"]
//! ```
//!
//! Mail is the receiver of last resort (no app, no webhook, just an inbox), so the
//! message is plain UTF-8 text that reads the same in any client and survives being
//! forwarded. TLS is rustls with the workspace's `ring` provider and the system's roots,
//! as for the HTTP sinks: no OpenSSL in the collector.

use std::net::IpAddr;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Message, SendError, key_fields};
use crate::alert::model::Level;
use crate::alert::policy::{DestinationConfig, SmtpSecurity};

/// The header receivers (and mail filters) can deduplicate on, as for the webhook sink.
const DELIVERY_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Yagura-Delivery");

/// RFC 3834: marks the mail as machine-sent, so out-of-office and other auto-replies
/// stay quiet instead of answering every alert.
const AUTO_SUBMITTED: HeaderName = HeaderName::new_from_ascii_str("Auto-Submitted");

/// A destination that sends mail: the transport with its TLS setup and login, the
/// parsed sender and recipients.
pub struct EmailSink {
    /// Boxed: the transport (TLS setup, login, limits) is a few hundred bytes, and the
    /// other sinks of `Sink` are a client handle and a string or two.
    transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// By hand: the transport holds the login, and nothing of it belongs in a log.
impl std::fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSink")
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl EmailSink {
    /// Checks the destination and builds its transport; no connection is made yet (the
    /// server may be down at start and up when the first alert comes).
    ///
    /// Errors name the key at fault, `alert.destinations.<name>.<key>: problem`, and never
    /// contain the password.
    pub fn new(name: &str, config: &DestinationConfig) -> Result<Self, String> {
        let at = format!("alert.destinations.{name}");
        let host = config
            .smtp_host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{at}: an email destination needs `smtp_host`"))?;
        if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
            return Err(format!(
                "{at}.smtp_host: `{host}` is not a host name or address"
            ));
        }

        let from = config
            .from
            .as_deref()
            .ok_or_else(|| format!("{at}: an email destination needs `from`"))?;
        let from = parse_mailbox(from).map_err(|e| format!("{at}.from: {e}"))?;
        if config.to.is_empty() {
            return Err(format!("{at}: an email destination needs `to`"));
        }
        let to = config
            .to
            .iter()
            .enumerate()
            .map(|(i, text)| parse_mailbox(text).map_err(|e| format!("{at}.to[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;

        if config.timeout_ms == 0 {
            return Err(format!("{at}.timeout_ms must be above 0"));
        }

        let tls_error = |e: lettre::transport::smtp::Error| format!("{at}: TLS setup: {e}");
        let builder = match config.smtp_security {
            // STARTTLS is required, not opportunistic: a server (or a man in the middle)
            // that does not offer it gets neither the login nor the mail.
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(tls_error)?
            }
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(tls_error)?
            }
            SmtpSecurity::None => {
                // Alerts say what is under attack and where: in clear text only to a relay
                // on this machine, which then sends them on as it is set up to.
                if !is_loopback(host) {
                    return Err(format!(
                        "{at}.smtp_security: \"none\" sends mail (and any login) in clear \
                         text, so it is only allowed to a relay on loopback (localhost, \
                         127.0.0.1, ::1), not to `{host}`; use \"starttls\" or \"tls\""
                    ));
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            }
        };
        let port = config.smtp_port.unwrap_or(match config.smtp_security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        });
        if port == 0 {
            return Err(format!("{at}.smtp_port must be above 0"));
        }
        // lettre applies it to each step (connect, TLS, every reply), not to the whole
        // exchange.
        let mut builder = builder
            .port(port)
            .timeout(Some(Duration::from_millis(config.timeout_ms)));

        match (&config.username, &config.password) {
            (Some(username), Some(password)) => {
                let password = password
                    .resolve()
                    .map_err(|e| format!("{at}.password: {e}"))?;
                builder = builder.credentials(Credentials::new(username.clone(), password));
            }
            (Some(_), None) => {
                return Err(format!(
                    "{at}.password: `username` is set but `password` is not"
                ));
            }
            (None, Some(_)) => {
                return Err(format!(
                    "{at}.username: `password` is set but `username` is not"
                ));
            }
            (None, None) => {}
        }

        Ok(EmailSink {
            transport: Box::new(builder.build()),
            from,
            to,
        })
    }

    /// Sends one mail to all recipients. A 5xx answer is final (an unknown recipient, a
    /// refused login, a rejected sender do not heal by waiting); anything else (no
    /// connection, a timeout, a 4xx "try later", a broken TLS handshake) is retried.
    pub async fn send(&self, message: &Message<'_>) -> Result<(), SendError> {
        let mail = self
            .mail(message)
            .map_err(|e| SendError::Permanent(format!("mail not built: {e}")))?;
        match self.transport.send(mail).await {
            Ok(_) => Ok(()),
            Err(error) => Err(classify(&error)),
        }
    }

    /// The mail of a message, headers and body.
    fn mail(&self, message: &Message<'_>) -> Result<lettre::Message, lettre::error::Error> {
        let (subject, body) = render(message);
        let delivery = message.notification.delivery_id();
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            // The same on every retry of this notification: a mail that did arrive
            // although the answer to it was lost shows up as a duplicate of the first,
            // and clients that thread or dedupe by Message-ID treat it so.
            .message_id(Some(message_id(&delivery)))
            .header(ContentType::TEXT_PLAIN)
            .raw_header(HeaderValue::new(AUTO_SUBMITTED, "auto-generated".into()))
            .raw_header(HeaderValue::new(DELIVERY_HEADER, delivery))
            .user_agent(concat!("yagura/", env!("CARGO_PKG_VERSION")).into());
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.body(body)
    }
}

/// Subject and plain-text body of a message.
///
/// The subject is the headline, so an inbox list alone says what happened. The body
/// repeats it, then gives the alert's key fields as `name: value` lines, its runbook and
/// its console link; a rate-limit summary lists each held notification on a line.
/// Values come from events and rules, so line breaks in them are flattened: a field must
/// not be able to forge lines (or headers) of its own.
pub fn render(message: &Message<'_>) -> (String, String) {
    let subject = one_line(&message.headline());
    let mut body = String::new();
    body.push_str(&subject);
    body.push_str("\n\n");
    if let Some(alert) = message.alert {
        for (name, value) in key_fields(alert) {
            body.push_str(&format!("{}: {}\n", one_line(&name), one_line(&value)));
        }
        body.push('\n');
        if let Some(runbook) = &alert.rule.runbook {
            body.push_str(&format!("Runbook: {}\n", one_line(runbook)));
        }
    } else if let Some(summary) = message.summary {
        for held in &summary.held {
            let level = Level::of(held.level.as_deref()).as_str().to_uppercase();
            body.push_str(&format!(
                "- [{level}] {} ({}): {} event{}, {}/alerts/{}\n",
                one_line(&held.rule_title),
                one_line(&held.kind),
                held.event_count,
                if held.event_count == 1 { "" } else { "s" },
                message.console_url.trim_end_matches('/'),
                one_line(&held.alert_id),
            ));
        }
    }
    if let Some(link) = message.alert_link() {
        body.push_str(&format!("Open in Yagura: {link}\n"));
    }
    body.push_str(&format!(
        "\n-- \nSent by Yagura (delivery {}).\n",
        message.notification.delivery_id()
    ));
    (subject, body)
}

/// `<delivery-id@yagura>`, with anything that is not allowed in a Message-ID's left part
/// replaced (delivery ids are hex, digits and dashes; this only guards the format).
fn message_id(delivery: &str) -> String {
    let local: String = delivery
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("<{local}@yagura>")
}

/// Control characters (line breaks, tabs) as spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A mailbox, `user@example.com` or `Name <user@example.com>`.
fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("`{text}` is not a mail address ({e})"))
}

/// `localhost` or a loopback address, bracketed or not.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Sorts a lettre error: permanent SMTP replies (5xx) are refusals, the rest is retried.
///
/// lettre's error text carries the server's reply or the I/O cause; never the login
/// (the password is only ever written to the server).
fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    if error.is_permanent() {
        SendError::Permanent(format!("SMTP: {error}"))
    } else {
        let what = if error.is_transient() {
            "deferred"
        } else if error.is_timeout() {
            "timed out"
        } else {
            "not delivered"
        };
        SendError::Retry {
            reason: format!("SMTP {what}: {error}"),
            after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::model::{HeldNotification, NotificationKind, Summary};
    use crate::alert::sinks::tests::{alert, notification};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// Longest a test waits on the exchange before failing instead of hanging.
    const TEST_LIMIT: Duration = Duration::from_secs(20);

    fn config(text: &str) -> DestinationConfig {
        toml::from_str(text).expect("destination config")
    }

    fn loopback_config(port: u16) -> DestinationConfig {
        config(&format!(
            "type = \"email\"\n\
             smtp_host = \"127.0.0.1\"\n\
             smtp_port = {port}\n\
             smtp_security = \"none\"\n\
             timeout_ms = 5000\n\
             from = \"Yagura <yagura@example.com>\"\n\
             to = [\"soc@example.com\", \"Oncall <oncall@example.com>\"]\n"
        ))
    }

    /// What the test server saw: every command line, and the DATA.
    #[derive(Debug, Default)]
    struct Captured {
        commands: Vec<String>,
        data: String,
    }

    /// A minimal SMTP server for one connection on loopback, answering RCPT with
    /// `rcpt_reply`: enough of RFC 5321 for lettre to send one mail (or fail to).
    async fn smtp_server(rcpt_reply: &'static str) -> (u16, tokio::task::JoinHandle<Captured>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut captured = Captured::default();
            write
                .write_all(b"220 test ESMTP\r\n")
                .await
                .expect("greeting");
            let mut line = String::new();
            loop {
                line.clear();
                if read.read_line(&mut line).await.expect("read command") == 0 {
                    break;
                }
                let command = line.trim_end().to_string();
                let verb = command
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                captured.commands.push(command);
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 test\r\n",
                    "MAIL" => b"250 2.1.0 ok\r\n",
                    "RCPT" => rcpt_reply.as_bytes(),
                    "DATA" => {
                        write.write_all(b"354 go ahead\r\n").await.expect("354");
                        loop {
                            line.clear();
                            if read.read_line(&mut line).await.expect("read data") == 0 {
                                return captured;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            captured.data.push_str(&line);
                        }
                        b"250 2.0.0 queued\r\n"
                    }
                    "RSET" | "NOOP" => b"250 ok\r\n",
                    "QUIT" => {
                        write.write_all(b"221 bye\r\n").await.expect("221");
                        break;
                    }
                    _ => b"502 not implemented\r\n",
                };
                write.write_all(reply).await.expect("reply");
            }
            captured
        });
        (port, server)
    }

    /// Sends the test alert's page through `sink`, in bounded time.
    async fn send_trigger(sink: &EmailSink) -> Result<(), SendError> {
        let alert = alert();
        let n = notification(NotificationKind::Trigger);
        let message = Message {
            notification: &n,
            alert: Some(&alert),
            summary: None,
            console_url: "https://yagura.example:8443",
        };
        tokio::time::timeout(TEST_LIMIT, sink.send(&message))
            .await
            .expect("send in time")
    }

    #[tokio::test]
    async fn sends_the_rendered_mail_over_smtp() {
        let (port, server) = smtp_server("250 2.1.5 ok\r\n").await;
        let sink = EmailSink::new("soc-mail", &loopback_config(port)).expect("email sink");
        send_trigger(&sink).await.expect("delivered");
        let captured = tokio::time::timeout(TEST_LIMIT, server)
            .await
            .expect("server in time")
            .expect("server task");

        assert!(
            captured
                .commands
                .iter()
                .any(|c| c == "MAIL FROM:<yagura@example.com>"),
            "{:?}",
            captured.commands
        );
        for rcpt in ["RCPT TO:<soc@example.com>", "RCPT TO:<oncall@example.com>"] {
            assert!(
                captured.commands.iter().any(|c| c == rcpt),
                "{:?}",
                captured.commands
            );
        }
        let data = &captured.data;
        assert!(
            data.contains("Subject: [HIGH] SSH brute force on web-1: 5 events\r\n"),
            "{data}"
        );
        assert!(
            data.contains("From: Yagura <yagura@example.com>\r\n"),
            "{data}"
        );
        assert!(data.contains("soc@example.com"), "{data}");
        assert!(data.contains("Oncall <oncall@example.com>"), "{data}");
        assert!(
            data.contains("Message-ID: <a1b2c3d4e5f60718-7@yagura>\r\n"),
            "{data}"
        );
        assert!(
            data.contains("X-Yagura-Delivery: a1b2c3d4e5f60718-7\r\n"),
            "{data}"
        );
        assert!(
            data.contains("Auto-Submitted: auto-generated\r\n"),
            "{data}"
        );
        assert!(
            data.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{data}"
        );
        assert!(
            data.contains("https://yagura.example:8443/alerts/a1b2c3d4e5f60718"),
            "{data}"
        );
        assert!(data.contains("source.ip: 203.0.113.9\r\n"), "{data}");
        assert!(
            captured.commands.iter().any(|c| c == "QUIT"),
            "{:?}",
            captured.commands
        );
    }

    /// Non-ASCII text goes out encoded (RFC 2047 subject, 7-bit-safe body), so a server
    /// without 8BITMIME (like the test's) takes it too.
    #[tokio::test]
    async fn non_ascii_text_is_encoded_for_any_server() {
        let (port, server) = smtp_server("250 2.1.5 ok\r\n").await;
        let sink = EmailSink::new("soc-mail", &loopback_config(port)).expect("email sink");
        let mut alert = alert();
        alert.rule.title = "Anmeldung fehlgeschlagen für Ünbekannt".into();
        alert.host = Some("wébserver-1".into());
        let n = notification(NotificationKind::Trigger);
        let message = Message {
            notification: &n,
            alert: Some(&alert),
            summary: None,
            console_url: "https://yagura.example",
        };
        tokio::time::timeout(TEST_LIMIT, sink.send(&message))
            .await
            .expect("send in time")
            .expect("delivered");
        let captured = tokio::time::timeout(TEST_LIMIT, server)
            .await
            .expect("server in time")
            .expect("server task");
        let data = &captured.data;
        assert!(data.is_ascii(), "{data}");
        assert!(
            data.contains("Subject: [HIGH] ") && data.contains("=?utf-8?b?"),
            "{data}"
        );
        assert!(
            data.contains("Content-Transfer-Encoding: quoted-printable")
                || data.contains("Content-Transfer-Encoding: base64"),
            "{data}"
        );
    }

    #[tokio::test]
    async fn a_5xx_refusal_is_permanent() {
        let (port, server) = smtp_server("550 5.1.1 no such user\r\n").await;
        let sink = EmailSink::new("soc-mail", &loopback_config(port)).expect("email sink");
        let error = send_trigger(&sink).await.expect_err("refused");
        match &error {
            SendError::Permanent(reason) => {
                assert!(
                    reason.contains("550") && reason.contains("no such user"),
                    "{reason}"
                );
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
        let captured = tokio::time::timeout(TEST_LIMIT, server)
            .await
            .expect("server in time")
            .expect("server task");
        assert!(
            captured.data.is_empty(),
            "no DATA after a refused recipient"
        );
    }

    #[tokio::test]
    async fn a_4xx_answer_is_retried() {
        let (port, server) = smtp_server("451 4.3.0 try again later\r\n").await;
        let sink = EmailSink::new("soc-mail", &loopback_config(port)).expect("email sink");
        let error = send_trigger(&sink).await.expect_err("deferred");
        assert!(
            matches!(&error, SendError::Retry { reason, after: None } if reason.contains("451")),
            "{error:?}"
        );
        tokio::time::timeout(TEST_LIMIT, server)
            .await
            .expect("server in time")
            .expect("server task");
    }

    #[tokio::test]
    async fn no_server_is_retried() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local addr").port()
        };
        let sink = EmailSink::new("soc-mail", &loopback_config(port)).expect("email sink");
        let error = send_trigger(&sink).await.expect_err("nothing listening");
        assert!(
            matches!(error, SendError::Retry { after: None, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn bad_configurations_are_refused_naming_the_key() {
        let plain_remote = config(
            "type = \"email\"\nsmtp_host = \"smtp.example.com\"\nsmtp_security = \"none\"\n\
             from = \"yagura@example.com\"\nto = [\"soc@example.com\"]\n",
        );
        let error = EmailSink::new("mail", &plain_remote).expect_err("plain text off loopback");
        assert!(
            error.starts_with("alert.destinations.mail.smtp_security:"),
            "{error}"
        );

        for host in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            let mut plain_local = plain_remote.clone();
            plain_local.smtp_host = Some(host.into());
            EmailSink::new("mail", &plain_local).expect("plain text to a loopback relay");
        }

        let mut bad_from = plain_remote.clone();
        bad_from.smtp_host = Some("localhost".into());
        bad_from.from = Some("not an address".into());
        let error = EmailSink::new("mail", &bad_from).expect_err("bad sender");
        assert!(
            error.starts_with("alert.destinations.mail.from:"),
            "{error}"
        );

        let mut bad_to = plain_remote.clone();
        bad_to.smtp_host = Some("localhost".into());
        bad_to.to = vec!["soc@example.com".into(), "soc at example".into()];
        let error = EmailSink::new("mail", &bad_to).expect_err("bad recipient");
        assert!(
            error.starts_with("alert.destinations.mail.to[1]:"),
            "{error}"
        );

        let mut no_password = plain_remote.clone();
        no_password.smtp_host = Some("localhost".into());
        no_password.username = Some("yagura".into());
        let error = EmailSink::new("mail", &no_password).expect_err("login without password");
        assert!(
            error.starts_with("alert.destinations.mail.password:"),
            "{error}"
        );
    }

    #[test]
    fn the_password_never_prints() {
        let with_login = config(
            "type = \"email\"\nsmtp_host = \"localhost\"\nsmtp_security = \"none\"\n\
             username = \"yagura\"\npassword = \"S3CR3T-PASSW0RD\"\n\
             from = \"yagura@example.com\"\nto = [\"soc@example.com\"]\n",
        );
        let sink = EmailSink::new("mail", &with_login).expect("email sink");
        assert!(!format!("{sink:?}").contains("S3CR3T"));
        assert!(!format!("{:?}", super::super::Sink::Email(sink)).contains("S3CR3T"));

        let mut from_env = with_login.clone();
        from_env.password = Some(crate::alert::policy::SecretValue::new(
            "env:YAGURA_TEST_UNSET_SMTP_PASSWORD",
        ));
        let error = EmailSink::new("mail", &from_env).expect_err("unset variable");
        assert!(
            error.starts_with("alert.destinations.mail.password:")
                && error.contains("YAGURA_TEST_UNSET_SMTP_PASSWORD"),
            "{error}"
        );
    }

    #[test]
    fn encrypted_transports_build_with_default_ports() {
        for security in ["starttls", "tls"] {
            let encrypted = config(&format!(
                "type = \"email\"\nsmtp_host = \"smtp.example.com\"\n\
                 smtp_security = \"{security}\"\n\
                 from = \"yagura@example.com\"\nto = [\"soc@example.com\"]\n"
            ));
            EmailSink::new("mail", &encrypted).expect("encrypted transport");
        }
    }

    #[test]
    fn renders_summaries_one_line_per_held_notification() {
        let summary = Summary {
            held: vec![
                HeldNotification {
                    alert_id: "a1".into(),
                    kind: "trigger".into(),
                    rule_title: "SSH brute force".into(),
                    level: Some("high".into()),
                    event_count: 5,
                },
                HeldNotification {
                    alert_id: "b2".into(),
                    kind: "update".into(),
                    rule_title: "Odd\nlogin".into(),
                    level: None,
                    event_count: 1,
                },
            ],
        };
        let mut n = notification(NotificationKind::Summary);
        n.alert_id = None;
        let message = Message {
            notification: &n,
            alert: None,
            summary: Some(&summary),
            console_url: "https://yagura.example",
        };
        let (subject, body) = render(&message);
        assert_eq!(subject, "2 notifications held by the rate limit");
        assert!(
            body.contains(
                "- [HIGH] SSH brute force (trigger): 5 events, https://yagura.example/alerts/a1\n"
            ),
            "{body}"
        );
        assert!(
            body.contains(
                "- [LOW] Odd login (update): 1 event, https://yagura.example/alerts/b2\n"
            ),
            "{body}"
        );
        assert_eq!(message_id(&n.delivery_id()), "<summary-7@yagura>");
    }

    #[test]
    fn renders_an_alert_with_its_fields_runbook_and_link() {
        let alert = alert();
        let n = notification(NotificationKind::Resolve);
        let message = Message {
            notification: &n,
            alert: Some(&alert),
            summary: None,
            console_url: "https://yagura.example",
        };
        let (subject, body) = render(&message);
        assert_eq!(
            subject,
            "[HIGH] resolved: SSH brute force on web-1: 5 events"
        );
        assert!(
            body.starts_with(&format!("{subject}\n\nlevel: high\n")),
            "{body}"
        );
        assert!(body.contains("host.name: web-1\n"), "{body}");
        assert!(
            body.contains("Runbook: runbooks/9d1f3c2a-7b55-4e0e-9d7e-000000000002.md\n"),
            "{body}"
        );
        assert!(
            body.contains("Open in Yagura: https://yagura.example/alerts/a1b2c3d4e5f60718\n"),
            "{body}"
        );
    }
}
