//! The text a claim is found by, in one place: what the query index (`crate::index`) indexes
//! for the `query` and `place` filters of ListClaims.

use crate::pb;

/// The claim's places (country, admin1, admin2, locality), as one text.
pub fn place_text(c: &pb::Claim) -> String {
    let parts: Vec<&str> = c
        .places
        .iter()
        .flat_map(|p| [&p.country, &p.admin1, &p.admin2, &p.locality])
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    parts.join(" ")
}

/// The claim's summary, text and tags: the separate texts free-text queries search.
pub fn claim_texts(c: &pb::Claim) -> impl Iterator<Item = &str> {
    [c.summary.as_str(), c.text.as_str()]
        .into_iter()
        .chain(c.tags.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
}
