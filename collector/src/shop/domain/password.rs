//! Password rules after NIST SP 800-63B: length is what counts (at least 8 characters,
//! 15 or more recommended, up to 128 accepted so passphrases fit), every Unicode
//! character allowed, no composition rules — and passwords that are common, guessable
//! or built from the account's own name are refused, judged by zxcvbn's offline
//! dictionaries and pattern matching.

pub const MIN_LENGTH: usize = 8;
/// What the registration page recommends.
pub const RECOMMENDED_LENGTH: usize = 15;
pub const MAX_LENGTH: usize = 128;
/// zxcvbn's score (0–4) a password must reach: 3 is "safely unguessable: moderate
/// protection from an offline slow-hash scenario".
pub const MIN_SCORE: u8 = 3;
/// zxcvbn's cost grows with length; what is past this is long enough not to matter.
const ESTIMATED_PREFIX: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    #[error(
        "a password needs at least {MIN_LENGTH} characters ({RECOMMENDED_LENGTH} or more recommended)"
    )]
    TooShort,
    #[error("a password has at most {MAX_LENGTH} characters")]
    TooLong,
    #[error("this password is too common or easy to guess; a longer passphrase works well")]
    Guessable,
}

/// Checks a new password; `context` holds what an attacker would try first (the email
/// address and its parts).
pub fn check_new_password(password: &str, context: &[&str]) -> Result<(), PasswordProblem> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(PasswordProblem::TooShort);
    }
    if length > MAX_LENGTH {
        return Err(PasswordProblem::TooLong);
    }
    let prefix: String = password.chars().take(ESTIMATED_PREFIX).collect();
    let estimate = zxcvbn::zxcvbn(&prefix, context);
    if u8::from(estimate.score()) < MIN_SCORE {
        return Err(PasswordProblem::Guessable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_short_and_personal_passwords_are_refused() {
        assert_eq!(
            check_new_password("hunter2", &[]),
            Err(PasswordProblem::TooShort)
        );
        for common in [
            "password1",
            "qwertyuiop",
            "iloveyou123",
            "123456789",
            "aaaaaaaaaaaa",
        ] {
            assert_eq!(
                check_new_password(common, &[]),
                Err(PasswordProblem::Guessable),
                "{common}"
            );
        }
        assert_eq!(
            check_new_password(
                "alice.wonder2026",
                &["alice.wonder@example.org", "alice.wonder"]
            ),
            Err(PasswordProblem::Guessable)
        );
        assert_eq!(
            check_new_password(&"x".repeat(129), &[]),
            Err(PasswordProblem::TooLong)
        );
    }

    #[test]
    fn passphrases_pass_without_composition_rules() {
        // No digit, no capital, no symbol: length and unpredictability are what count.
        check_new_password("correct horse battery staple", &[]).expect("a passphrase");
        check_new_password("glacier marmalade tangent", &[]).expect("another");
        // Any Unicode character counts as one.
        check_new_password("ねこがすきですとてもすき", &[]).expect("non-ASCII");
        check_new_password(&"correct horse battery staple ".repeat(4), &[]).expect("long");
    }
}
