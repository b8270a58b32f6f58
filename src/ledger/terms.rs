//! The words a claim is found by: written to the word and place indexes by `apply`, and matched
//! by the list queries in `read`. One place, so the index and the matcher can never disagree
//! about which text counts and how it is split (`claims::validate::words`: lowercased, split on
//! non-alphanumerics, sorted, deduplicated).

use crate::claims::validate::words;
use crate::pb;

/// The words of a claim's places (country, admin1, admin2, locality).
pub fn place_words(c: &pb::Claim) -> Vec<String> {
    let text: Vec<&str> = c
        .places
        .iter()
        .flat_map(|p| [&p.country, &p.admin1, &p.admin2, &p.locality])
        .map(String::as_str)
        .collect();
    words(&text.join(" "))
}

/// The words of a claim's summary, text and tags.
pub fn text_words(c: &pb::Claim) -> Vec<String> {
    words(&format!("{} {} {}", c.summary, c.text, c.tags.join(" ")))
}
