//! The contact form: what a visitor sends (name, email, phone, address, message),
//! checked field by field at the edge, and masked for exports to test environments.
//!
//! The rules keep what is stored to plausible values of each kind, not to "safe"
//! characters: an address or a message may hold `<`, `'` or `;`, because whatever is
//! stored is bound as a query parameter and encoded on output, never refused for its
//! text. Every bad field is reported at once, so a visitor fixes the form in one go.

use serde::{Deserialize, Serialize};

use super::user::Email;

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Shortest phone number, in characters, and fewest digits in it.
pub const MIN_PHONE_CHARS: usize = 5;
/// Longest phone number, in characters (E.164 is at most 15 digits, plus formatting).
pub const MAX_PHONE_CHARS: usize = 20;
/// Longest address, in characters.
pub const MAX_ADDRESS_CHARS: usize = 200;
/// Longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// The form as it arrives. An unknown field is refused rather than dropped: a client
/// that sends one is out of step with the server, and a silently ignored field is data
/// the sender thinks was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContactForm {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub address: String,
    /// Optional: an absent message is an empty one.
    #[serde(default)]
    pub message: String,
}

/// One field that did not pass, for the client to show next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// The field's name as in [`RawContactForm`].
    pub field: &'static str,
    /// What is wrong, in words a visitor understands.
    pub problem: String,
}

/// A contact form whose every field passed its rules (see [`ContactForm::parse`]); the
/// fields are private, so one is only ever made by parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactForm {
    name: String,
    email: Email,
    phone: String,
    address: String,
    message: String,
}

/// The fields encrypted at rest: the ones that locate a person (the name and email
/// identify the sender to the shop, and are needed in the clear to answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SensitiveField {
    Phone,
    Address,
}

impl SensitiveField {
    /// Every sensitive field, for code that encrypts or re-encrypts a whole row.
    pub const ALL: [SensitiveField; 2] = [SensitiveField::Phone, SensitiveField::Address];

    /// The field's name, as in [`RawContactForm`] and in a ciphertext's associated data.
    pub fn as_str(self) -> &'static str {
        match self {
            SensitiveField::Phone => "phone",
            SensitiveField::Address => "address",
        }
    }
}

fn problem(field: &'static str, text: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field,
        problem: text.into(),
    }
}

/// Letters of any script, spaces, and the `'`, `-` and `.` of names such as
/// "O'Brien", "Jean-Luc" or "J. R. R."; at least one letter.
fn check_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err("a name is needed".into());
    }
    if chars > MAX_NAME_CHARS {
        return Err(format!("a name is at most {MAX_NAME_CHARS} characters"));
    }
    let allowed = |c: char| c.is_alphabetic() || matches!(c, ' ' | '\'' | '-' | '.');
    if !name.chars().all(allowed) {
        return Err("a name holds letters, spaces, ' - and . only".into());
    }
    if !name.chars().any(char::is_alphabetic) {
        return Err("a name holds at least one letter".into());
    }
    Ok(name.to_string())
}

/// Digits with the usual formatting (`+44 (20) 7946-0958`, `020.7946.0958`); the
/// formatting is kept as typed, since a person reads it, not a dialler.
fn check_phone(text: &str) -> Result<String, String> {
    let phone = text.trim();
    let chars = phone.chars().count();
    if !(MIN_PHONE_CHARS..=MAX_PHONE_CHARS).contains(&chars) {
        return Err(format!(
            "a phone number is {MIN_PHONE_CHARS} to {MAX_PHONE_CHARS} characters"
        ));
    }
    let allowed = |c: char| c.is_ascii_digit() || matches!(c, ' ' | '+' | '(' | ')' | '-' | '.');
    if !phone.chars().all(allowed) {
        return Err("a phone number holds digits, spaces and + ( ) - . only".into());
    }
    if phone.chars().filter(char::is_ascii_digit).count() < MIN_PHONE_CHARS {
        return Err(format!(
            "a phone number holds at least {MIN_PHONE_CHARS} digits"
        ));
    }
    Ok(phone.to_string())
}

/// One line of free text: no control characters (a newline or an escape sequence in an
/// address would forge lines in the logs and exports it goes to).
fn check_address(text: &str) -> Result<String, String> {
    let address = text.trim();
    let chars = address.chars().count();
    if chars == 0 {
        return Err("an address is needed".into());
    }
    if chars > MAX_ADDRESS_CHARS {
        return Err(format!(
            "an address is at most {MAX_ADDRESS_CHARS} characters"
        ));
    }
    if address.chars().any(char::is_control) {
        return Err("an address holds no control characters or line breaks".into());
    }
    Ok(address.to_string())
}

/// Free text over several lines, kept exactly as typed: line breaks and tabs are the
/// only control characters allowed.
fn check_message(text: &str) -> Result<String, String> {
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(format!(
            "a message is at most {MAX_MESSAGE_CHARS} characters"
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("a message holds no control characters but line breaks and tabs".into());
    }
    Ok(text.to_string())
}

impl ContactForm {
    /// Checks every field and keeps the trimmed values; on failure, names every field
    /// that did not pass, in the form's order.
    ///
    /// - `name`: 1–100 characters of letters (any script), spaces, `'`, `-` and `.`,
    ///   with at least one letter. Combining marks that are not letters (a decomposed
    ///   "é") are refused; browsers send composed text.
    /// - `email`: as [`Email::parse`].
    /// - `phone`: 5–20 characters of ASCII digits, spaces and `+ ( ) - .`, with at
    ///   least 5 digits.
    /// - `address`: 1–200 characters, no control characters.
    /// - `message`: at most 2000 characters, no control characters except `\n`, `\r`
    ///   and `\t`; not trimmed.
    pub fn parse(raw: RawContactForm) -> Result<ContactForm, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut report = |field: &'static str, text: String| problems.push(problem(field, text));
        let name = check_name(&raw.name).map_err(|e| report("name", e)).ok();
        let email = Email::parse(&raw.email)
            .map_err(|e| report("email", e.to_string()))
            .ok();
        let phone = check_phone(&raw.phone).map_err(|e| report("phone", e)).ok();
        let address = check_address(&raw.address)
            .map_err(|e| report("address", e))
            .ok();
        let message = check_message(&raw.message)
            .map_err(|e| report("message", e))
            .ok();
        match (name, email, phone, address, message) {
            (Some(name), Some(email), Some(phone), Some(address), Some(message)) => {
                Ok(ContactForm {
                    name,
                    email,
                    phone,
                    address,
                    message,
                })
            }
            _ => Err(problems),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn email(&self) -> &Email {
        &self.email
    }

    pub fn phone(&self) -> &str {
        &self.phone
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The value of a field that is encrypted at rest.
    pub fn sensitive(&self, field: SensitiveField) -> &str {
        match field {
            SensitiveField::Phone => &self.phone,
            SensitiveField::Address => &self.address,
        }
    }
}

/// What every mask is made of: it says a value was there, and nothing of it.
const MASK: &str = "***";

/// A name for a test-environment export: its first letter only (`Alice Smith` →
/// `A***`), enough to tell rows apart by eye without naming anyone.
pub fn mask_name(name: &str) -> String {
    match name.trim().chars().next() {
        Some(first) => format!("{first}{MASK}"),
        None => MASK.to_string(),
    }
}

/// An email address for a test-environment export: the first character of the local
/// part and the domain (`alice@example.org` → `a***@example.org`); the domain says which
/// provider, which tests of mail routing need, and not who.
pub fn mask_email(email: &str) -> String {
    match email.trim().rsplit_once('@') {
        Some((local, domain)) => match local.chars().next() {
            Some(first) => format!("{first}{MASK}@{domain}"),
            None => format!("{MASK}@{domain}"),
        },
        None => MASK.to_string(),
    }
}

/// A phone number for a test-environment export: the last two digits only
/// (`+44 20 7946 0958` → `***58`), as a caller-ID check shows them. A value with fewer
/// digits than a valid phone number has (see [`ContactForm::parse`]) keeps none, since
/// its last two could be most of it.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < MIN_PHONE_CHARS {
        return MASK.to_string();
    }
    let last_two: String = digits[digits.len() - 2..].iter().collect();
    format!("{MASK}{last_two}")
}

/// Free text (an address, a message) for a test-environment export: nothing of it, not
/// even its length, since any part of an address or a message can identify someone.
pub fn mask_text(_text: &str) -> String {
    MASK.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw() -> RawContactForm {
        RawContactForm {
            name: "Alice Smith".into(),
            email: "alice@example.org".into(),
            phone: "+44 20 7946 0958".into(),
            address: "1 High Street, Oxford OX1 1AA".into(),
            message: "Hello,\r\n\tdo you ship to Wales?".into(),
        }
    }

    /// The problems a form with `field` set to `value` (the others good) has.
    fn problems_with(field: &str, value: &str) -> Vec<&'static str> {
        let mut form = raw();
        let slot = match field {
            "name" => &mut form.name,
            "email" => &mut form.email,
            "phone" => &mut form.phone,
            "address" => &mut form.address,
            "message" => &mut form.message,
            other => panic!("no field {other}"),
        };
        *slot = value.to_string();
        match ContactForm::parse(form) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(|p| p.field).collect(),
        }
    }

    #[test]
    fn a_good_form_is_kept_trimmed() {
        let mut form = raw();
        form.name = "  Alice Smith ".into();
        form.phone = " 020 7946 0958\t".into();
        form.address = " 1 High Street ".into();
        let form = ContactForm::parse(form).expect("valid form");
        assert_eq!(form.name(), "Alice Smith");
        assert_eq!(form.email().as_str(), "alice@example.org");
        assert_eq!(form.phone(), "020 7946 0958");
        assert_eq!(form.address(), "1 High Street");
        assert_eq!(form.message(), "Hello,\r\n\tdo you ship to Wales?");
        assert_eq!(form.sensitive(SensitiveField::Phone), "020 7946 0958");
        assert_eq!(form.sensitive(SensitiveField::Address), "1 High Street");
    }

    #[test]
    fn names() {
        for good in [
            "Alice",
            "O'Brien",
            "Jean-Luc Picard",
            "J. R. R. Tolkien",
            "Zoë Ødegård",
            "山田 太郎",
            "Ёлкин",
            &"a".repeat(MAX_NAME_CHARS),
            &"é".repeat(MAX_NAME_CHARS),
        ] {
            assert_eq!(problems_with("name", good), Vec::<&str>::new(), "{good:?}");
        }
        for bad in [
            "",
            "   ",
            "Alice1",
            "Alice <script>",
            "Robert'); DROP TABLE forms;--",
            "Alice\nSmith",
            "Alice\u{0}",
            "Alice_Smith",
            "- . '",
            "e\u{301}", // decomposed é: the combining accent is not a letter
            &"a".repeat(MAX_NAME_CHARS + 1),
        ] {
            assert_eq!(problems_with("name", bad), vec!["name"], "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            problems_with("email", " Bob@Example.COM "),
            Vec::<&str>::new()
        );
        for bad in ["", "bob", "bob@", "bob@example", "b ob@example.org"] {
            assert_eq!(problems_with("email", bad), vec!["email"], "{bad:?}");
        }
    }

    #[test]
    fn phones() {
        for good in [
            "12345",
            "+44 (20) 7946-0958",
            "020.7946.0958",
            "  +1 555 0100  ",
            &"1".repeat(MAX_PHONE_CHARS),
        ] {
            assert_eq!(problems_with("phone", good), Vec::<&str>::new(), "{good:?}");
        }
        for bad in [
            "",
            "1234",
            "+(1) 2-3.4",
            "12345 ext 6",
            "12345;",
            "١٢٣٤٥", // Arabic-Indic digits: not what the shop's staff can dial
            "123\n45",
            &"1".repeat(MAX_PHONE_CHARS + 1),
        ] {
            assert_eq!(problems_with("phone", bad), vec!["phone"], "{bad:?}");
        }
    }

    #[test]
    fn addresses() {
        for good in [
            "1 High Street",
            "Flat 2; <b>Rose</b> Cottage, O'Neill's Lane",
            "東京都千代田区1-1",
            &"a".repeat(MAX_ADDRESS_CHARS),
        ] {
            assert_eq!(
                problems_with("address", good),
                Vec::<&str>::new(),
                "{good:?}"
            );
        }
        for bad in [
            "",
            "  ",
            "1 High Street\nForged: line",
            "1 High\tStreet",
            "\u{1b}[31mred",
            "a\u{7f}",
            &"a".repeat(MAX_ADDRESS_CHARS + 1),
        ] {
            assert_eq!(problems_with("address", bad), vec!["address"], "{bad:?}");
        }
    }

    #[test]
    fn messages() {
        for good in [
            "",
            "<script>alert(1)</script>'; DROP TABLE forms;--",
            "line one\nline two\r\n\tindented",
            &"x".repeat(MAX_MESSAGE_CHARS),
        ] {
            assert_eq!(
                problems_with("message", good),
                Vec::<&str>::new(),
                "{good:?}"
            );
        }
        for bad in [
            "a\u{0}b",
            "bell\u{7}",
            "\u{1b}[2J",
            &"x".repeat(MAX_MESSAGE_CHARS + 1),
        ] {
            assert_eq!(problems_with("message", bad), vec!["message"], "{bad:?}");
        }
    }

    #[test]
    fn every_bad_field_is_reported_together() {
        let form = RawContactForm {
            name: "".into(),
            email: "nope".into(),
            phone: "12".into(),
            address: "a\nb".into(),
            message: "\u{0}".into(),
        };
        let problems = ContactForm::parse(form).expect_err("all bad");
        let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["name", "email", "phone", "address", "message"]);
        assert!(problems.iter().all(|p| !p.problem.is_empty()));
        let json = serde_json::to_value(&problems[0]).expect("serialize");
        assert_eq!(json["field"], "name");
        assert_eq!(json["problem"], "a name is needed");
    }

    #[test]
    fn the_raw_form_refuses_unknown_fields_and_defaults_the_message() {
        let form: RawContactForm = serde_json::from_str(
            r#"{"name":"A","email":"a@example.org","phone":"12345","address":"x"}"#,
        )
        .expect("message may be absent");
        assert_eq!(form.message, "");
        let extra = serde_json::from_str::<RawContactForm>(
            r#"{"name":"A","email":"a@example.org","phone":"12345","address":"x","message":"","admin":true}"#,
        );
        assert!(extra.is_err(), "an unknown field is refused");
        let missing = serde_json::from_str::<RawContactForm>(r#"{"name":"A"}"#);
        assert!(missing.is_err(), "the required fields are required");
    }

    #[test]
    fn sensitive_fields_are_named() {
        assert_eq!(SensitiveField::Phone.as_str(), "phone");
        assert_eq!(SensitiveField::Address.as_str(), "address");
        assert_eq!(SensitiveField::ALL.len(), 2);
    }

    #[test]
    fn masks_keep_nothing_identifying() {
        assert_eq!(mask_email("alice@example.org"), "a***@example.org");
        assert_eq!(mask_email("@example.org"), "***@example.org");
        assert_eq!(mask_email("not an address"), "***");
        assert_eq!(mask_email("Élodie@example.fr"), "É***@example.fr");
        assert_eq!(mask_phone("+44 20 7946 0958"), "***58");
        assert_eq!(mask_phone("12345"), "***45");
        assert_eq!(mask_phone("1234"), "***");
        assert_eq!(mask_phone(""), "***");
        assert_eq!(mask_name("Alice Smith"), "A***");
        assert_eq!(mask_name("  Ödön"), "Ö***");
        assert_eq!(mask_name(""), "***");
        assert_eq!(mask_text("1 High Street, Oxford"), "***");
        assert_eq!(mask_text(""), "***");
    }

    /// Mostly strings that often pass a field's rules (so accepted forms are checked
    /// too, not only refusals), and now and then arbitrary ones that mostly do not.
    fn field(plausible: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![
            10 => proptest::string::string_regex(plausible).expect("regex"),
            1 => ".{0,120}",
            1 => proptest::collection::vec(any::<char>(), 0..40)
                .prop_map(|c| c.into_iter().collect::<String>()),
        ]
    }

    fn raw_forms() -> impl Strategy<Value = RawContactForm> {
        (
            field("[ a-zA-Zéß山'.-]{0,110}"),
            field("[a-z]{1,5}@[a-z]{0,5}\\.[a-z]{1,3}"),
            field("\\+?[0-9]{1,3}[ (.-]{0,2}[0-9]{2,8}[ ).-]{0,2}[0-9]{0,12}"),
            field("[ -~é]{0,205}"),
            prop_oneof![
                10 => field("[ -~\t\n\ré]{0,100}"),
                1 => "[a-z\n]{1995,2005}",
            ],
        )
            .prop_map(|(name, email, phone, address, message)| RawContactForm {
                name,
                email,
                phone,
                address,
                message,
            })
    }

    proptest! {
        /// Untrusted input never panics, and whatever is accepted is within the rules.
        #[test]
        fn parsing_never_panics_and_keeps_the_limits(raw in raw_forms()) {
            match ContactForm::parse(raw.clone()) {
                Ok(form) => {
                    let name = form.name();
                    prop_assert_eq!(name, name.trim());
                    prop_assert!((1..=MAX_NAME_CHARS).contains(&name.chars().count()));
                    prop_assert!(name.chars().all(|c| c.is_alphabetic() || " '-.".contains(c)));
                    prop_assert!(Email::parse(form.email().as_str()).is_ok());
                    let phone = form.phone();
                    prop_assert_eq!(phone, phone.trim());
                    let phone_chars = phone.chars().count();
                    prop_assert!((MIN_PHONE_CHARS..=MAX_PHONE_CHARS).contains(&phone_chars));
                    prop_assert!(phone.chars().all(|c| c.is_ascii_digit() || " +()-.".contains(c)));
                    let digits = phone.chars().filter(char::is_ascii_digit).count();
                    prop_assert!(digits >= MIN_PHONE_CHARS);
                    let address = form.address();
                    prop_assert_eq!(address, address.trim());
                    prop_assert!((1..=MAX_ADDRESS_CHARS).contains(&address.chars().count()));
                    prop_assert!(!address.chars().any(char::is_control));
                    let message = form.message();
                    prop_assert_eq!(message, raw.message.as_str());
                    prop_assert!(message.chars().count() <= MAX_MESSAGE_CHARS);
                    prop_assert!(
                        message.chars().all(|c| !c.is_control() || "\n\r\t".contains(c))
                    );
                }
                Err(problems) => {
                    prop_assert!(!problems.is_empty());
                    let mut fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
                    fields.dedup();
                    prop_assert_eq!(fields.len(), problems.len(), "one problem per field");
                }
            }
        }

        /// A masked phone number shows no digit of the original but its last two.
        #[test]
        fn masked_phones_show_only_the_last_two_digits(
            phone in prop_oneof!["[ 0-9+().-]{0,30}", ".{0,40}"],
        ) {
            let masked = mask_phone(&phone);
            prop_assert!(masked.starts_with(MASK));
            let original: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
            let shown: Vec<char> = masked.chars().filter(char::is_ascii_digit).collect();
            prop_assert!(shown.len() <= 2);
            prop_assert!(original.ends_with(&shown), "{:?} from {:?}", masked, phone);
            prop_assert!(!masked[MASK.len()..].chars().any(|c| !c.is_ascii_digit()));
        }
    }
}
