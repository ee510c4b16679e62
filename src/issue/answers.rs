//! Answers to clarifying questions in comments (contract §3).

use std::collections::BTreeSet;

use pulldown_cmark::{Event, Parser, Tag, TagEnd};

use super::markdown::{options, prose_lines, strip_line_prefix};

/// The question numbers one comment answers.
pub fn answered_by(comment: &str) -> BTreeSet<u32> {
    let mut answered: BTreeSet<u32> = prose_lines(comment).filter_map(answer_on_line).collect();
    answered.extend(numbered_items(comment));
    answered
}

/// `A1: …`, `Answer 1: …`, `Answer1: …` or `Q1: … A: …` at the start of a line.
fn answer_on_line(line: &str) -> Option<u32> {
    let rest = strip_line_prefix(line);
    labelled_answer(rest).or_else(|| question_then_answer(rest))
}

fn labelled_answer(text: &str) -> Option<u32> {
    let lower = text.to_ascii_lowercase();
    let after_token = if let Some(after) = lower.strip_prefix("answer") {
        after.trim_start_matches(' ')
    } else {
        lower.strip_prefix('a')?
    };
    let (number, after_number) = leading_number(after_token)?;
    let after_markers = after_number.trim_start_matches(['*', '_', ' ']);
    after_markers.starts_with(':').then_some(number)
}

fn question_then_answer(text: &str) -> Option<u32> {
    let plain: String = text.chars().filter(|c| !matches!(c, '*' | '_')).collect();
    let lower = plain.to_ascii_lowercase();
    let (number, after_number) = leading_number(lower.strip_prefix('q')?)?;
    let rest = after_number.trim_start_matches(' ').strip_prefix(':')?;
    let has_answer = rest
        .match_indices("a:")
        .any(|(at, _)| at == 0 || rest[..at].ends_with(' '));
    has_answer.then_some(number)
}

fn leading_number(text: &str) -> Option<(u32, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    Some((text[..digits].parse().ok()?, &text[digits..]))
}

/// Items of top-level ordered lists outside quotes: item N answers question N.
fn numbered_items(comment: &str) -> BTreeSet<u32> {
    let mut numbers = BTreeSet::new();
    let mut quote_depth = 0usize;
    let mut lists: Vec<(Option<u64>, u64)> = Vec::new();
    for event in Parser::new_ext(comment, options()) {
        match event {
            Event::Start(Tag::BlockQuote(_)) => quote_depth += 1,
            Event::End(TagEnd::BlockQuote(_)) => quote_depth = quote_depth.saturating_sub(1),
            Event::Start(Tag::List(start)) => lists.push((start, 0)),
            Event::End(TagEnd::List(_)) => {
                lists.pop();
            }
            Event::Start(Tag::Item) => {
                let top_level = lists.len() == 1;
                if let Some((start, index)) = lists.last_mut() {
                    if let (Some(start), true, 0) = (start, top_level, quote_depth) {
                        numbers.extend(u32::try_from(*start + *index).ok());
                    }
                    *index += 1;
                }
            }
            _ => {}
        }
    }
    numbers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(comment: &str) -> Vec<u32> {
        answered_by(comment).into_iter().collect()
    }

    #[test]
    fn labelled_answers_in_every_documented_form() {
        for (comment, expected) in [
            ("A1: yes", vec![1]),
            ("a1 : yes", vec![1]),
            ("A1 : yes", vec![1]),
            ("Answer 1: yes", vec![1]),
            ("ANSWER 1: yes", vec![1]),
            ("Answer1: yes", vec![1]),
            ("answer  2 : no", vec![2]),
            ("**A1:** yes", vec![1]),
            ("**A1**: yes", vec![1]),
            ("_A2_: yes", vec![2]),
            ("*Answer 3:* maybe", vec![3]),
            ("- A4: in a bullet", vec![4]),
            ("A10: ten", vec![10]), // not question 1
            ("A1: yes\nA2: no\n\nA3: later", vec![1, 2, 3]),
        ] {
            assert_eq!(a(comment), expected, "{comment:?}");
        }
    }

    #[test]
    fn question_and_answer_on_one_line() {
        assert_eq!(a("Q1: Which DB? A: Postgres"), vec![1]);
        assert_eq!(a("q2: region? a: eu-west"), vec![2]);
        assert_eq!(a("**Q3:** Size? **A:** 10 GB"), vec![3]);
        assert_eq!(a("Q4: Anything? A:yes"), vec![4]);
        assert!(
            a("Q1: Which DB? DATA: none").is_empty(),
            "A: must be a word of its own"
        );
        assert!(
            a("Q1: Which DB?\nA: Postgres").is_empty(),
            "the answer must be on the same line"
        );
    }

    #[test]
    fn ordered_list_items_answer_by_their_rendered_number() {
        assert_eq!(a("1. Postgres\n2. eu-west\n"), vec![1, 2]);
        assert_eq!(a("2. eu-west\n3. 10 GB\n"), vec![2, 3]);
        assert_eq!(a("1) Postgres\n"), vec![1]);
        assert_eq!(
            a("1. Postgres\n   1. version 16\n"),
            vec![1],
            "nested items belong to their answer"
        );
    }

    #[test]
    fn things_that_are_not_answers() {
        for comment in [
            "Answer 1 yes",
            "1.5 GB is enough",
            "Decision: use Postgres",
            "> A1: yes",
            "```\nA1: yes\n```",
            "    A1: indented code",
            "<!-- A1: yes -->",
            "Thanks, A1: looks right to me",
            "A: yes",
            "- bullet answer",
            "> 1. quoted list",
            "AA1: yes",
            "Answers 1: yes",
        ] {
            assert!(
                a(comment).is_empty(),
                "{comment:?} answered {:?}",
                a(comment)
            );
        }
    }
}
