//! The issue ID used in branch names and for display (contract §5).

use std::sync::LazyLock;

use regex::Regex;

static LEADING_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:\[(?P<bracketed>[A-Za-z]+[0-9]*-[0-9]+)\]|(?P<bare>[A-Za-z]+[0-9]*-[0-9]+)(?:$|[^A-Za-z0-9-]))")
        .expect("static pattern")
});

/// A leading `ABC-123` or `[ABC-123]` in the title (letters, optional digits, dash, digits),
/// else `ISSUE-<number>`.
pub fn issue_id(title: &str, number: u64) -> String {
    LEADING_ID
        .captures(title)
        .and_then(|c| c.name("bracketed").or_else(|| c.name("bare")))
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| format!("ISSUE-{number}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_titles() {
        for (title, id) in [
            ("ABC-123 Fix login", "ABC-123"),
            ("[ABC-123] Fix login", "ABC-123"),
            ("PROJ2-45: tidy", "PROJ2-45"),
            ("  web-7 lower case", "web-7"),
            ("ABC-123", "ABC-123"),
            ("Fix ABC-123 later", "ISSUE-42"),
            ("ABC123 no dash", "ISSUE-42"),
            ("ABC- 123", "ISSUE-42"),
            ("123-456 digits first", "ISSUE-42"),
            ("[ABC-123 unclosed", "ISSUE-42"),
            ("ABC-123x", "ISSUE-42"),
            ("ABC-12-3", "ISSUE-42"),
            ("", "ISSUE-42"),
        ] {
            assert_eq!(issue_id(title, 42), id, "{title:?}");
        }
    }
}
