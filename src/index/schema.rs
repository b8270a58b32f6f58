//! The query index's schema: one document per claim, replaced whenever something that decides
//! how the claim is found (its status, its sources) changes; and one small document per log
//! entry that submits no claim, never replaced. Either finds its entry by the entry's leaf hash
//! (GetInclusionProof by hash): a claim's document by its submission's.

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, FAST,
    INDEXED, STORED, STRING,
};
use tantivy::{IndexSettings, IndexSortByField, TantivyDocument};

use crate::claims::policy::Outcome;
use crate::pb;

/// The version of this schema and of what the indexer puts in it. An index written with another
/// version is rebuilt from the log when it is opened.
pub const VERSION: u32 = 6;

/// The index's settings: every segment keeps its documents sorted by claim log index, so a
/// list page (log order, after a page token) reads each segment from the token's position and
/// stops after a page of matches (`search::LogOrder`), instead of ranking every match.
pub fn settings() -> IndexSettings {
    IndexSettings {
        sort_by_field: Some(IndexSortByField {
            field: "index".into(),
            order: tantivy::Order::Asc,
        }),
        ..IndexSettings::default()
    }
}

/// The tokenizer of claim text: tantivy's `en_stem` (lowercase, split on non-alphanumerics,
/// English Snowball stemming), so "drone" finds "drones" and "shoot" finds "shooting" (but not
/// the irregular "shot").
pub const TEXT_TOKENIZER: &str = "en_stem";

#[derive(Clone)]
pub struct Fields {
    pub schema: Schema,
    /// The claim id: the term a document is replaced by.
    pub id: Field,
    /// The claim's log index: the order of every list, and the page token. On an entry's
    /// document, the entry's index.
    pub index: Field,
    /// 1 on every claim document: what a list without filters matches.
    pub claim: Field,
    /// The first 8 bytes (`leaf_key`) of the leaf hash of the entry at `index`: on an entry's
    /// document, that entry; on a claim's, its submission.
    pub leaf: Field,
    pub kind: Field,
    /// The effective status, as judged when the document was written.
    pub status: Field,
    pub confirmed: Field,
    pub claimant: Field,
    /// Every source the claim's status depends on (claimant, attribution, evidence sources and
    /// theirs): a new grade of one of them re-evaluates exactly these claims.
    pub source: Field,
    /// Words of the places (country, admin1, admin2, locality), not stemmed.
    pub place: Field,
    /// Summary, text and tags, stemmed, with positions for phrases.
    pub text: Field,
    /// Event time, seconds: start, and end (the start again when there is no end).
    pub event_start: Field,
    pub event_end: Field,
    /// `resolve_by`, seconds: the moment the claim's status may change with time alone.
    pub deadline: Field,
}

impl Fields {
    pub fn new() -> Fields {
        let mut b = Schema::builder();
        let num = || NumericOptions::default().set_indexed().set_fast();
        let id = b.add_text_field("id", STRING | STORED);
        let index = b.add_u64_field("index", num().set_stored());
        let claim = b.add_u64_field("claim", NumericOptions::default().set_indexed());
        let leaf = b.add_u64_field("leaf", NumericOptions::default().set_indexed());
        let kind = b.add_u64_field("kind", num());
        let status = b.add_u64_field("status", num().set_stored());
        let confirmed = b.add_u64_field("confirmed", NumericOptions::default().set_stored());
        let claimant = b.add_text_field("claimant", STRING);
        let source = b.add_text_field("source", STRING);
        let place = b.add_text_field(
            "place",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::Basic),
            ),
        );
        let text = b.add_text_field(
            "text",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(TEXT_TOKENIZER)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        );
        let event_start = b.add_i64_field("event_start", INDEXED | FAST);
        let event_end = b.add_i64_field("event_end", INDEXED | FAST);
        let deadline = b.add_i64_field("deadline", INDEXED);
        Fields {
            schema: b.build(),
            id,
            index,
            claim,
            leaf,
            kind,
            status,
            confirmed,
            claimant,
            source,
            place,
            text,
            event_start,
            event_end,
            deadline,
        }
    }

    /// The document of a claim record judged `out`; `submission` is the leaf hash of the
    /// entry that submitted it (entry `index`): the claim's document finds that entry, which
    /// has no entry document of its own.
    pub fn document(
        &self,
        rec: &pb::GetClaimResponse,
        out: &Outcome,
        submission: &tlog_tiles::Hash,
    ) -> Option<TantivyDocument> {
        let c = rec.claim.as_ref()?;
        let mut d = TantivyDocument::default();
        d.add_text(self.id, &c.id);
        d.add_u64(self.index, c.index);
        d.add_u64(self.leaf, leaf_key(submission));
        d.add_u64(self.claim, 1);
        d.add_u64(self.kind, c.kind as u64);
        let (status, confirmed) = judgement(out);
        d.add_u64(self.status, status);
        d.add_u64(self.confirmed, confirmed);
        d.add_text(self.claimant, &c.claimant_id);
        let mut sources: Vec<&str> = crate::ledger::status::sources_of(rec)
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        sources.sort_unstable();
        sources.dedup();
        for s in sources {
            d.add_text(self.source, s);
        }
        d.add_text(self.place, crate::ledger::terms::place_text(c));
        // Summary, text and each tag as separate values: a phrase never runs from one into
        // the next.
        for part in crate::ledger::terms::claim_texts(c) {
            d.add_text(self.text, part);
        }
        if let Some(start) = c.event_time.as_ref().and_then(|t| t.start.as_ref()) {
            let end = c
                .event_time
                .as_ref()
                .and_then(|t| t.end.as_ref())
                .map_or(start.seconds, |e| e.seconds);
            d.add_i64(self.event_start, start.seconds);
            d.add_i64(self.event_end, end);
        }
        // Only a deadline the status can change at (a warning's): the indexer re-judges the
        // claims whose deadline passed.
        if let Some(t) = crate::claims::policy::deadline(c) {
            d.add_i64(self.deadline, t);
        }
        Some(d)
    }
}

/// A judgement as a claim's document holds it: its `status` and `confirmed` fields, the only
/// ones a grade or the time can change.
pub fn judgement(out: &Outcome) -> (u64, u64) {
    (out.status as i32 as u64, u64::from(out.confirmed))
}

impl Fields {
    /// The judgement a stored claim document holds (as `judgement` gives it); `None` on an
    /// entry's document.
    pub fn stored_judgement(&self, doc: &TantivyDocument) -> Option<(u64, u64)> {
        let stored = |f| doc.get_first(f).and_then(|v| v.as_u64());
        Some((stored(self.status)?, stored(self.confirmed)?))
    }
}

/// A leaf hash as the `leaf` field holds it: its first 8 bytes, big-endian. As a 64-character
/// hex string every entry added a long random term to the term dictionary, and building those
/// dictionaries was about a third of the indexer's CPU under writes (BENCHMARKS.md). Eight
/// bytes can collide, so every entry found by them is checked against the log's own leaf hash.
pub fn leaf_key(leaf: &tlog_tiles::Hash) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&leaf.0[..8]);
    u64::from_be_bytes(b)
}

impl Fields {
    /// The document of log entry `index`, found by its leaf hash; a claim's submission has none
    /// (its claim's document carries the leaf key, under the same `index`), which halves the
    /// documents a submit adds.
    pub fn entry_document(&self, index: u64, leaf: &tlog_tiles::Hash) -> TantivyDocument {
        let mut d = TantivyDocument::default();
        d.add_u64(self.index, index);
        d.add_u64(self.leaf, leaf_key(leaf));
        d
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}
