//! Clarifying questions in an issue body (contract §2), read with a CommonMark parser.

use std::collections::BTreeSet;

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};

use super::markdown::options;

/// Default headings that start a questions section.
pub const DEFAULT_HEADINGS: [&str; 2] = ["Clarifying Questions", "Open Questions"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    /// Opened by an ATX heading of this level; ends at a heading of the same or a higher level.
    Atx(u8),
    /// Opened by a bold-only paragraph; ends at any ATX heading or the next bold heading.
    Bold,
}

/// The numbers (as GitHub renders them) of the questions in `body`'s questions sections.
pub fn questions(body: &str, headings: &[String]) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let mut section: Option<Section> = None;
    let mut quote_depth = 0usize;
    // Per open list: its first number (None: bullet list) and how many items it has had.
    let mut lists: Vec<(Option<u64>, u64)> = Vec::new();
    let mut heading_text: Option<String> = None;
    let mut paragraph: Option<Paragraph> = None;

    for event in Parser::new_ext(body, options()) {
        match event {
            Event::Start(Tag::BlockQuote(_)) => quote_depth += 1,
            Event::End(TagEnd::BlockQuote(_)) => quote_depth = quote_depth.saturating_sub(1),
            Event::Start(Tag::Heading { .. }) => heading_text = Some(String::new()),
            Event::End(TagEnd::Heading(level)) => {
                let text = heading_text.take().unwrap_or_default();
                if quote_depth > 0 || !lists.is_empty() {
                    continue;
                }
                let level = heading_level(level);
                if matches!(section, Some(Section::Bold))
                    || matches!(section, Some(Section::Atx(open)) if level <= open)
                {
                    section = None;
                }
                if is_question_heading(&text, headings) {
                    section = Some(Section::Atx(level));
                }
            }
            Event::Start(Tag::List(start)) => lists.push((start, 0)),
            Event::End(TagEnd::List(_)) => {
                lists.pop();
            }
            Event::Start(Tag::Item) => {
                let top_level = lists.len() == 1;
                if let Some((Some(start), index)) = lists.last_mut() {
                    let number = *start + *index;
                    *index += 1;
                    if top_level && section.is_some() && quote_depth == 0 {
                        found.extend(u32::try_from(number).ok());
                    }
                } else if let Some((None, index)) = lists.last_mut() {
                    *index += 1;
                }
            }
            Event::Start(Tag::Paragraph) if lists.is_empty() && quote_depth == 0 => {
                paragraph = Some(Paragraph::default());
            }
            Event::Start(Tag::Strong) => {
                if let Some(p) = paragraph.as_mut() {
                    p.strong_depth += 1;
                }
            }
            Event::End(TagEnd::Strong) => {
                if let Some(p) = paragraph.as_mut() {
                    p.strong_depth = p.strong_depth.saturating_sub(1);
                    if p.strong_depth == 0 {
                        p.segments.push(Segment::StrongEnd);
                    }
                }
            }
            Event::Text(text) | Event::Code(text) => {
                if let Some(h) = heading_text.as_mut() {
                    h.push_str(&text);
                }
                if let Some(p) = paragraph.as_mut() {
                    p.push_text(&text);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(p) = paragraph.as_mut() {
                    p.push_text(" ");
                }
            }
            Event::End(TagEnd::Paragraph) => {
                let Some(p) = paragraph.take() else { continue };
                if let Some(number) = p.bold_number() {
                    if section.is_some() {
                        found.insert(number);
                    }
                } else if let Some(text) = p.bold_only_text() {
                    if matches!(section, Some(Section::Bold)) {
                        section = None;
                    }
                    if is_question_heading(&text, headings) {
                        section = Some(Section::Bold);
                    }
                }
            }
            _ => {}
        }
    }
    found
}

#[derive(Debug)]
enum Segment {
    Strong(String),
    StrongEnd,
    Plain(String),
}

/// Inline content of a top-level paragraph, split into bold and plain runs.
#[derive(Debug, Default)]
struct Paragraph {
    segments: Vec<Segment>,
    strong_depth: usize,
}

impl Paragraph {
    fn push_text(&mut self, text: &str) {
        let strong = self.strong_depth > 0;
        match (self.segments.last_mut(), strong) {
            (Some(Segment::Strong(run)), true) | (Some(Segment::Plain(run)), false) => {
                run.push_str(text)
            }
            (_, true) => self.segments.push(Segment::Strong(text.to_owned())),
            (_, false) => self.segments.push(Segment::Plain(text.to_owned())),
        }
    }

    /// `**1.** Which database?` — a paragraph that starts with a bold number.
    fn bold_number(&self) -> Option<u32> {
        let first = self.segments.iter().find(|s| match s {
            Segment::Plain(text) => !text.trim().is_empty(),
            _ => true,
        })?;
        let Segment::Strong(text) = first else {
            return None;
        };
        let digits = text.trim().trim_end_matches(['.', ')', ':']);
        (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }

    /// The text of a paragraph made only of bold text.
    fn bold_only_text(&self) -> Option<String> {
        let mut text = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Strong(run) => text.push_str(run),
                Segment::Plain(run) if run.trim().is_empty() => {}
                Segment::Plain(_) => return None,
                Segment::StrongEnd => {}
            }
        }
        (!text.trim().is_empty()).then_some(text)
    }
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// `Clarifying Questions`, ignoring case, a trailing colon and a trailing `(remark)`.
pub fn is_question_heading(text: &str, headings: &[String]) -> bool {
    let mut name = text.trim();
    loop {
        let before = name;
        name = name.trim_end_matches(':').trim_end();
        if name.ends_with(')')
            && let Some(open) = name.rfind('(')
        {
            name = name[..open].trim_end();
        }
        if name == before {
            break;
        }
    }
    let default_headings;
    let headings: &[String] = if headings.is_empty() {
        default_headings = DEFAULT_HEADINGS.map(String::from);
        &default_headings
    } else {
        headings
    };
    headings.iter().any(|h| h.trim().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(body: &str) -> Vec<u32> {
        questions(body, &[]).into_iter().collect()
    }

    #[test]
    fn atx_headings_of_any_level_open_a_section() {
        for hashes in 1..=6 {
            let body = format!(
                "{} Clarifying Questions\n\n1. Which DB?\n2. Which region?\n",
                "#".repeat(hashes)
            );
            assert_eq!(q(&body), vec![1, 2], "{body}");
        }
        assert_eq!(q("## Open Questions\n1. Why?\n"), vec![1]);
    }

    #[test]
    fn heading_text_ignores_case_colon_and_remark() {
        for heading in [
            "## clarifying questions",
            "## CLARIFYING QUESTIONS:",
            "## Clarifying Questions (Optional)",
            "## Clarifying Questions (optional):",
            "## Open Questions:  ",
        ] {
            assert_eq!(
                q(&format!("{heading}\n\n1. Which DB?\n")),
                vec![1],
                "{heading}"
            );
        }
    }

    #[test]
    fn prose_that_mentions_the_words_is_not_a_heading() {
        assert!(q("We have no clarifying questions right now.\n\n1. Do the thing\n").is_empty());
        assert!(q("## Clarifying Questions about the API\n\n1. Which DB?\n").is_empty());
        assert!(
            q("Clarifying Questions\n\n1. Which DB?\n").is_empty(),
            "plain text is not a heading"
        );
        assert!(
            q("**Clarifying Questions** below:\n\n1. Which DB?\n").is_empty(),
            "bold plus prose is not a heading"
        );
    }

    #[test]
    fn bold_paragraphs_open_a_section() {
        assert_eq!(
            q("**Clarifying Questions**\n\n1. Which DB?\n2. Which region?\n"),
            vec![1, 2]
        );
        assert_eq!(q("**Open Questions:**\n\n1. Which DB?\n"), vec![1]);
        assert_eq!(
            q("__Clarifying Questions (Optional)__\n1. Which DB?\n"),
            vec![1]
        );
    }

    #[test]
    fn an_atx_section_ends_at_a_heading_of_the_same_or_higher_level() {
        let body = "## Clarifying Questions\n1. A?\n### Details\n2) B?\n## Plan\n1. Step one\n";
        assert_eq!(
            q(body),
            vec![1, 2],
            "a deeper heading stays inside; list `2)` starts at 2"
        );
        let body = "### Clarifying Questions\n1. A?\n# Title\n2. Not a question\n";
        assert_eq!(q(body), vec![1]);
    }

    #[test]
    fn a_bold_section_ends_at_any_atx_heading_or_the_next_bold_heading() {
        assert_eq!(
            q("**Clarifying Questions**\n\n1. A?\n\n###### Notes\n\n2. Not a question\n"),
            vec![1]
        );
        assert_eq!(
            q("**Clarifying Questions**\n\n1. A?\n\n**Plan**\n\n2. Not a question\n"),
            vec![1]
        );
    }

    #[test]
    fn sections_combine() {
        let body = "## Clarifying Questions\n1. A?\n## Plan\n1. Step\n## Open Questions\n3. C?\n";
        assert_eq!(q(body), vec![1, 3]);
    }

    #[test]
    fn numbers_are_the_rendered_ones() {
        assert_eq!(
            q("## Clarifying Questions\n3. A?\n7. B?\n9. C?\n"),
            vec![3, 4, 5],
            "GitHub numbers by start + position"
        );
        assert_eq!(
            q("## Clarifying Questions\n1. A?\n\nText between.\n\n1. B?\n"),
            vec![1],
            "two lists both render 1: one question"
        );
        assert_eq!(q("## Clarifying Questions\n1) A?\n2) B?\n"), vec![1, 2]);
    }

    #[test]
    fn bold_numbers_are_questions() {
        let body =
            "## Clarifying Questions\n\n**1.** Which DB?\n\n**2)** Which region?\n\n**3** Size?\n";
        assert_eq!(q(body), vec![1, 2, 3]);
        assert!(q("**1.** Which DB?\n").is_empty(), "outside a section");
    }

    #[test]
    fn code_quotes_html_comments_and_bullets_hold_no_questions() {
        let body = "## Clarifying Questions\n\n```\n1. in code\n```\n\n> 1. quoted\n\n<!--\n1. commented\n-->\n\n- bullet?\n";
        assert!(q(body).is_empty(), "{:?}", q(body));
        assert!(q("> ## Clarifying Questions\n> 1. quoted heading\n").is_empty());
    }

    #[test]
    fn nested_lists_are_part_of_their_question() {
        let body = "## Clarifying Questions\n1. Which DB?\n   1. Postgres\n   2. MySQL\n2. Which region?\n";
        assert_eq!(q(body), vec![1, 2]);
    }

    #[test]
    fn a_section_without_questions_holds_nothing_back() {
        assert!(q("## Clarifying Questions\nNone at this time.\n").is_empty());
    }

    #[test]
    fn custom_headings_replace_the_defaults() {
        let headings = vec!["Fragen".to_string()];
        assert_eq!(questions("## Fragen\n1. Wer?\n", &headings).len(), 1);
        assert!(questions("## Clarifying Questions\n1. Who?\n", &headings).is_empty());
    }
}
