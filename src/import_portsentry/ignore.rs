//! Compares how PortSentry 1.2 and nfsentry read one ignore file, line by line, and decides
//! whether nfsentry can keep reading the file itself or needs its entries carried over. It does
//! not read the file; the text comes in.
//!
//! PortSentry took the leading digits, dots, colons and slashes of each line that does not start
//! with `#`, read the address with inet_addr() and the bits after `/` with atoi(), and skipped a
//! line whose bits were over 32. nfsentry's parser takes IPv4 and IPv6 addresses and CIDRs,
//! strips `#` comments anywhere and blanks around, and refuses any other text. The files
//! PortSentry shipped (`127.0.0.1/32`, `0.0.0.0`, comments) mean the same to both.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};

use super::{quoted, Note, NoteKind};
use crate::config;

/// What to write for IGNORE_FILE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ignore {
    /// nfsentry reads the file to the same effect: point `ignore_file` at it.
    SameFile,
    /// The entries to carry over into `ignore`, because the two read the file differently
    /// (each difference has a note).
    Entries(Vec<IpNet>),
}

/// How PortSentry 1.2 read one line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Portsentry {
    /// A comment or an empty line.
    Skipped,
    /// An entry it compared sources against.
    Entry(Ipv4Net),
    /// Nothing it could use, and why.
    Nothing(&'static str),
}

/// Decides between [`Ignore::SameFile`] and carried-over entries for the ignore file at `path`.
pub(super) fn compare(text: &str, path: &Path, notes: &mut Vec<Note>) -> Ignore {
    let notes_before = notes.len();
    let mut entries: Vec<IpNet> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let note = |notes: &mut Vec<Note>, kind, reason: String| {
            notes.push(Note::in_file(path, index + 1, kind, reason));
        };
        let content = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        let theirs = portsentry_reading(line);
        let ours = (!content.is_empty()).then(|| config::parse_network(content));
        match (theirs, ours) {
            (Portsentry::Skipped, None) | (Portsentry::Nothing(_), None) => {}
            (Portsentry::Entry(network), Some(Ok(read))) if IpNet::V4(network) == read => {
                entries.push(read);
            }
            (Portsentry::Entry(network), Some(Err(_))) if network.prefix_len() == 0 => note(
                notes,
                NoteKind::NotMapped,
                format!(
                    "PortSentry read {} as {network}, every address, so it never blocked \
                     anyone; not carried over",
                    quoted(line)
                ),
            ),
            (Portsentry::Entry(network), ours) => {
                let why = match ours {
                    Some(Ok(read)) => format!("nfsentry reads it as {read}"),
                    Some(Err(_)) => "nfsentry's ignore_file parser refuses the line".to_owned(),
                    None => "nfsentry reads no entry there".to_owned(),
                };
                note(
                    notes,
                    NoteKind::MappedInPart,
                    format!(
                        "PortSentry read {} as {network} and {why}; carried over as {network}",
                        quoted(line)
                    ),
                );
                entries.push(IpNet::V4(network));
            }
            (theirs, Some(Ok(read))) => {
                let why = match theirs {
                    Portsentry::Nothing(why) => why,
                    _ => "PortSentry read no entry there",
                };
                note(
                    notes,
                    NoteKind::MappedInPart,
                    format!(
                        "{}: {why}; nfsentry reads it as {read} and ignores that source, as \
                         the line asks",
                        quoted(line)
                    ),
                );
                entries.push(read);
            }
            (theirs, Some(Err(_))) => {
                let why = match theirs {
                    Portsentry::Nothing(why) => why,
                    _ => "PortSentry read no entry there",
                };
                note(
                    notes,
                    NoteKind::NotMapped,
                    format!(
                        "{}: {why}, and nfsentry's parser refuses it; not carried over",
                        quoted(line)
                    ),
                );
            }
        }
    }
    let read_alike = notes.len() == notes_before;
    if read_alike && config::parse_ignore_list(text, path).is_ok() {
        return Ignore::SameFile;
    }
    let mut unique = Vec::with_capacity(entries.len());
    for entry in entries {
        if !unique.contains(&entry) {
            unique.push(entry);
        }
    }
    Ignore::Entries(unique)
}

/// One line as PortSentry 1.2's NeverBlock() read it.
fn portsentry_reading(line: &str) -> Portsentry {
    if line.is_empty() || line.starts_with('#') {
        return Portsentry::Skipped;
    }
    let token: String = line
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':' | '/'))
        .collect();
    let (address, bits) = match token.split_once('/') {
        Some((address, bits)) => (address, leading_number(bits)),
        None => (token.as_str(), 32),
    };
    if bits > 32 {
        return Portsentry::Nothing("PortSentry skipped it for its netmask over 32 bits");
    }
    if address.is_empty() {
        return Portsentry::Nothing("PortSentry found no address at the start of the line");
    }
    // inet_addr() also takes shortened ("10.1") and octal ("010.0.0.1") forms; an address
    // written out in full is the only one both programs agree on.
    match address.parse::<Ipv4Addr>() {
        Ok(address) => match Ipv4Net::new(address, u8::try_from(bits).unwrap_or(32)) {
            Ok(network) => Portsentry::Entry(network.trunc()),
            Err(_) => Portsentry::Nothing("PortSentry could not use its netmask"),
        },
        Err(_) if address.contains(':') => {
            Portsentry::Nothing("PortSentry 1.2 read IPv4 addresses only")
        }
        Err(_) => Portsentry::Nothing(
            "PortSentry read it with inet_addr(), which reads shortened and octal forms \
             (\"10.1\", \"010.0.0.1\") its own way",
        ),
    }
}

/// atoi(): the leading decimal digits, 0 when there are none.
fn leading_number(text: &str) -> u32 {
    text.bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0u32, |number, digit| {
            number
                .saturating_mul(10)
                .saturating_add(u32::from(digit - b'0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    const FILE: &str = "/etc/portsentry/portsentry.ignore";

    fn compared(text: &str) -> (Ignore, Vec<String>) {
        let mut notes = Vec::new();
        let ignore = compare(text, Path::new(FILE), &mut notes);
        let notes = notes
            .iter()
            .map(|note| note.render("portsentry.conf"))
            .collect();
        (ignore, notes)
    }

    #[test]
    fn the_shipped_file_is_read_alike() {
        let shipped = "# Put hosts in here you never want blocked. This includes the IP \
                       addresses\n#\n# 192.168.2.0/24\n#\n\n127.0.0.1/32\n0.0.0.0\n";
        assert_eq!(compared(shipped), (Ignore::SameFile, Vec::new()));
        // Debian's generated file, its static part and a host address.
        let debian = "# /etc/portsentry/portsentry.ignore: Contains all IPs portsentry(8) \n\
                      #                                    will never block.\n\n\
                      # IPs from /etc/portsentry/portsentry.ignore.static:\n127.0.0.1/32\n\
                      0.0.0.0\n\n# dynamically fetched IPs(via ifconfig -a):\n192.0.2.10\n\
                      198.51.100.0/24 # lab\n";
        assert_eq!(compared(debian), (Ignore::SameFile, Vec::new()));
    }

    #[test]
    fn lines_read_differently_are_carried_over_with_a_note_each() {
        let text = "127.0.0.1/32\n\
                    192.0.2.1 gateway\n\
                    \x20 198.51.100.7\n\
                    2001:db8::/32\n\
                    10.1\n\
                    192.0.2.0/40\n\
                    example.org\n\
                    203.0.113.9/\n";
        let (ignore, notes) = compared(text);
        assert_eq!(
            ignore,
            Ignore::Entries(vec![
                net("127.0.0.1/32"),
                net("192.0.2.1/32"),
                net("198.51.100.7/32"),
                net("2001:db8::/32"),
            ])
        );
        let expected_lines = [2, 3, 4, 5, 6, 7, 8];
        assert_eq!(notes.len(), expected_lines.len(), "{notes:#?}");
        for (note, line) in notes.iter().zip(expected_lines) {
            assert!(note.starts_with(&format!("{FILE}:{line}: ")), "{note}");
        }
        assert!(
            notes[0].contains("carried over as 192.0.2.1/32"),
            "{}",
            notes[0]
        );
        assert!(notes[1].contains("no address at the start"), "{}", notes[1]);
        assert!(notes[6].contains("every address"), "{}", notes[6]);
    }

    #[test]
    fn portsentry_reads_lines_as_neverblock_did() {
        let cases = [
            ("# comment", Portsentry::Skipped),
            ("", Portsentry::Skipped),
            (
                "0.0.0.0",
                Portsentry::Entry(Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 32)),
            ),
            (
                "192.0.2.77/24#lab",
                Portsentry::Entry(Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24)),
            ),
            (
                "198.51.100.0/24abc",
                Portsentry::Entry(Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24)),
            ),
            (
                "203.0.113.9/",
                Portsentry::Entry(Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0)),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(portsentry_reading(line), expected, "{line:?}");
        }
        assert!(matches!(
            portsentry_reading("\t10.0.0.1"),
            Portsentry::Nothing(_)
        ));
        assert!(matches!(
            portsentry_reading("10.0.0.0/33"),
            Portsentry::Nothing(_)
        ));
    }
}
