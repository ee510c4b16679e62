//! What the rules need from CommonMark: the regions that never count (code, quotes, HTML) and
//! the lines of prose outside them.

use std::ops::Range;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// GitHub renders issues with these extensions; they change what counts as a list or a quote.
pub fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Byte ranges of code blocks, block quotes and HTML blocks (HTML comments among them).
pub fn excluded_ranges(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut quote_start: Option<(usize, usize)> = None; // (start, depth)
    let mut depth = 0usize;
    for (event, range) in Parser::new_ext(text, options()).into_offset_iter() {
        match event {
            Event::Start(Tag::BlockQuote(_)) => {
                if depth == 0 {
                    quote_start = Some((range.start, 0));
                }
                depth += 1;
            }
            Event::End(TagEnd::BlockQuote(_)) => {
                depth = depth.saturating_sub(1);
                if depth == 0
                    && let Some((start, _)) = quote_start.take()
                {
                    ranges.push(start..range.end);
                }
            }
            Event::Start(Tag::CodeBlock(_)) | Event::Start(Tag::HtmlBlock) => ranges.push(range),
            _ => {}
        }
    }
    ranges
}

/// Lines outside code blocks, block quotes and HTML blocks.
pub fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let excluded = excluded_ranges(text);
    let mut offset = 0;
    text.split_inclusive('\n').filter_map(move |line| {
        let (start, end) = (offset, offset + line.len());
        offset = end;
        // Overlap, not containment: an indented code block's range starts after the indent.
        let hidden = excluded.iter().any(|r| r.start < end && r.end > start);
        (!hidden).then(|| line.trim_end_matches(['\n', '\r']))
    })
}

/// A line without leading space, bullet markers and emphasis markers: `- **A1:** yes` reads as
/// `A1:** yes`.
pub fn strip_line_prefix(line: &str) -> &str {
    let mut rest = line.trim_start();
    for bullet in ["- ", "* ", "+ "] {
        if let Some(after) = rest.strip_prefix(bullet) {
            rest = after.trim_start();
            break;
        }
    }
    rest.trim_start_matches(['*', '_'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_quotes_and_html_comments_are_not_prose() {
        let text = "keep 1\n```\nhidden 1\n```\n> hidden 2\n> hidden 3\n\nkeep 2\n<!--\nhidden 4\n-->\n\n    hidden 5\n\nkeep 3\n";
        let lines: Vec<&str> = prose_lines(text).filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines, vec!["keep 1", "keep 2", "keep 3"]);
    }

    #[test]
    fn prefixes_are_stripped() {
        assert_eq!(strip_line_prefix("  - **A1:** yes"), "A1:** yes");
        assert_eq!(strip_line_prefix("_a1_: yes"), "a1_: yes");
        assert_eq!(strip_line_prefix("1. A1: yes"), "1. A1: yes");
    }
}
