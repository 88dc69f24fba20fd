//! Endpoint inventory: what runs on the host, what it exposes and what is attached to
//! it — running processes with the SHA-256 of their executables ([`processes`]),
//! listening sockets and their owning processes ([`procnet`]), local users and groups
//! ([`accounts`]), installed packages for patch visibility ([`packages`]), the ARP/NDP
//! neighbour table ([`neighbours`]), USB devices ([`usb`]), network interfaces with their
//! MAC and IP addresses ([`interfaces`]), and mounted filesystems and disks ([`mounts`]).
//!
//! Every reader takes the root of the tree it reads (`/proc`, `/sys`) as a parameter
//! instead of hard-coding it, so tests run against fixture trees built in a temporary
//! directory and the parsers of these kernel tables can be exercised without the
//! machine's own state.

pub mod accounts;
pub mod interfaces;
pub mod mounts;
pub mod neighbours;
pub mod observe;
pub mod packages;
pub mod processes;
pub mod procnet;
mod sock_diag;
pub mod usb;

/// Property-test input for the table parsers: a line of one of `fixtures`, cut at one
/// place and with arbitrary text spliced in at another — near-valid rows, which find
/// more edge cases than random text.
#[cfg(test)]
pub(crate) fn spliced_fixture_lines(
    fixtures: &[&'static str],
) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let lines: Vec<&'static str> = fixtures.iter().flat_map(|t| t.lines()).collect();
    (
        proptest::sample::select(lines),
        any::<usize>(),
        any::<usize>(),
        ".{0,12}",
    )
        .prop_map(|(line, cut, at, insert)| {
            let mut s: String = line.chars().take(cut % (line.len() + 1)).collect();
            let at = s
                .char_indices()
                .map(|(i, _)| i)
                .nth(at % (s.chars().count() + 1))
                .unwrap_or(s.len());
            s.insert_str(at, &insert);
            s
        })
}
