//! References between issues and pull requests in prose: dependencies (contract §4) and
//! closing keywords (contract §6).

use std::collections::BTreeSet;

use super::markdown::{prose_lines, strip_line_prefix};

/// An issue named in text: in this repository (`repository: None`) or in `owner/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IssueRef {
    pub repository: Option<String>,
    pub number: u64,
}

/// Dependencies named in an issue body: lines starting with `Depends on` or `Blocked by`
/// followed by `#12`, `owner/repo#7`, or an issue URL; several may follow, separated by
/// commas and `and`.
pub fn dependencies(body: &str, this_repository: &str) -> BTreeSet<IssueRef> {
    let mut found = BTreeSet::new();
    for line in prose_lines(body) {
        let text = strip_line_prefix(line);
        let lower = text.to_ascii_lowercase();
        let Some(after) = ["depends on", "blocked by"]
            .iter()
            .find_map(|phrase| lower.strip_prefix(phrase))
        else {
            continue;
        };
        let rest = &text[text.len() - after.len()..];
        for word in rest
            .split(|c: char| c.is_whitespace() || c == ',')
            .map(|w| w.trim_matches(['*', '_', ':', '.', ';', '(', ')']))
            .filter(|w| !w.is_empty())
        {
            if word.eq_ignore_ascii_case("and") || word == "&" {
                continue;
            }
            match parse_ref(word, this_repository) {
                Some(reference) => {
                    found.insert(reference);
                }
                None => break,
            }
        }
    }
    found
}

/// Issues a pull request's title and body close with GitHub's closing keywords, in this
/// repository.
pub fn closed_by_keywords(text: &str, this_repository: &str) -> BTreeSet<u64> {
    const KEYWORDS: [&str; 9] = [
        "close", "closes", "closed", "fix", "fixes", "fixed", "resolve", "resolves", "resolved",
    ];
    let mut found = BTreeSet::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        let trimmed = word.trim_start_matches(|c: char| !c.is_alphanumeric());
        let (keyword, inline_target) = match trimmed.split_once(':') {
            Some((keyword, target)) => (keyword, Some(target)),
            None => (trimmed, None),
        };
        if !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(keyword)) {
            continue;
        }
        let target = match inline_target.filter(|t| !t.is_empty()) {
            Some(target) => target,
            None => match words.get(i + 1) {
                Some(next) if *next == ":" => words.get(i + 2).copied().unwrap_or_default(),
                Some(next) => next,
                None => continue,
            },
        };
        let target = target.trim_end_matches(['.', ',', ';', ')', '!', '?']);
        if let Some(IssueRef {
            repository: None,
            number,
        }) = parse_ref(target, this_repository)
        {
            found.insert(number);
        }
    }
    found
}

/// `#12`, `owner/repo#7` or `https://github.com/owner/repo/issues/7` (also `/pull/7`). A
/// reference to this repository comes back with `repository: None`.
pub fn parse_ref(word: &str, this_repository: &str) -> Option<IssueRef> {
    let local = |repository: &str, number: u64| IssueRef {
        repository: (!repository.eq_ignore_ascii_case(this_repository))
            .then(|| repository.to_owned()),
        number,
    };
    if let Some(number) = word.strip_prefix('#') {
        return Some(IssueRef {
            repository: None,
            number: number_of(number)?,
        });
    }
    let url = word
        .strip_prefix("https://github.com/")
        .or_else(|| word.strip_prefix("http://github.com/"));
    if let Some(path) = url {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        if let [owner, repo, "issues" | "pull", number] = parts.as_slice() {
            return Some(local(&format!("{owner}/{repo}"), number_of(number)?));
        }
        return None;
    }
    let (repository, number) = word.split_once('#')?;
    let (owner, repo) = repository.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (valid(owner) && valid(repo)).then_some(())?;
    Some(local(repository, number_of(number)?))
}

fn number_of(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "acme/web";

    fn deps(body: &str) -> Vec<(Option<String>, u64)> {
        dependencies(body, REPO)
            .into_iter()
            .map(|r| (r.repository, r.number))
            .collect()
    }

    fn other(number: u64) -> (Option<String>, u64) {
        (Some("other/lib".into()), number)
    }

    #[test]
    fn dependency_forms() {
        assert_eq!(deps("Depends on #12"), vec![(None, 12)]);
        assert_eq!(
            deps("depends on #12, #14 and #15"),
            vec![(None, 12), (None, 14), (None, 15)]
        );
        assert_eq!(deps("Blocked by other/lib#7"), vec![other(7)]);
        assert_eq!(
            deps("BLOCKED BY https://github.com/other/lib/issues/7"),
            vec![other(7)]
        );
        assert_eq!(
            deps("Blocked by acme/web#3"),
            vec![(None, 3)],
            "this repository by name"
        );
        assert_eq!(deps("- **Depends on** #4."), vec![(None, 4)]);
        assert_eq!(deps("Depends on: #5"), vec![(None, 5)]);
    }

    #[test]
    fn not_dependencies() {
        for body in [
            "```\nDepends on #12\n```",
            "> Depends on #12",
            "This depends on #12 being merged",
            "Depends on the API design",
            "Depends on #",
            "Relates to #12",
        ] {
            assert!(deps(body).is_empty(), "{body:?}: {:?}", deps(body));
        }
        assert_eq!(
            deps("Depends on #3 and the new API, #9"),
            vec![(None, 3)],
            "the list stops at prose"
        );
    }

    #[test]
    fn closing_keywords_link_issues() {
        let links = |t: &str| closed_by_keywords(t, REPO).into_iter().collect::<Vec<_>>();
        for keyword in [
            "close", "closes", "closed", "fix", "fixes", "fixed", "resolve", "resolves",
            "resolved", "FIXES", "Fixes:",
        ] {
            assert_eq!(links(&format!("{keyword} #42")), vec![42], "{keyword}");
        }
        assert_eq!(links("Fixes: #1"), vec![1]);
        assert_eq!(
            links("fixes #1, closes #2. Resolves acme/web#3"),
            vec![1, 2, 3]
        );
        assert_eq!(links("Fixes https://github.com/acme/web/issues/9"), vec![9]);
        assert_eq!(links("(fixes #8)"), vec![8]);
    }

    #[test]
    fn not_closing_links() {
        let links = |t: &str| closed_by_keywords(t, REPO).into_iter().collect::<Vec<_>>();
        for text in [
            "Refs #1",
            "Fixes other/lib#2",
            "prefixes #3",
            "fixes issue #4",
            "Fixes #",
            "#5 fixes it",
            "fixes #1x",
        ] {
            assert!(links(text).is_empty(), "{text:?}: {:?}", links(text));
        }
    }

    #[test]
    fn references() {
        assert_eq!(parse_ref("#0", REPO), None);
        assert_eq!(
            parse_ref("https://github.com/acme/web/pull/4", REPO),
            Some(IssueRef {
                repository: None,
                number: 4
            })
        );
        assert_eq!(parse_ref("https://github.com/acme/web", REPO), None);
        assert_eq!(
            parse_ref("ACME/WEB#4", REPO),
            Some(IssueRef {
                repository: None,
                number: 4
            })
        );
        assert_eq!(parse_ref("not a ref", REPO), None);
    }
}
