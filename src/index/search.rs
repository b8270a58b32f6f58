//! ListClaims from the query index: one tantivy query with every filter, the page taken in
//! log order after the page token's claim index, and the claims read from the ledger.

use std::ops::Bound;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::query::Weight;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::query_grammar::{self, Occur as GrammarOccur, UserInputAst, UserInputLeaf};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{
    DocAddress, DocId, DocSet, Score, SegmentOrdinal, SegmentReader, TantivyDocument, Term,
    TERMINATED,
};

use super::{IndexError, QueryIndex};
use crate::claims::validate::FieldError;
use crate::ledger::read::{bad_token, decode_token, encode_token, page_size, MAX_PAGE_BYTES};
use crate::pb;

fn invalid(field: &str, message: impl Into<String>) -> IndexError {
    IndexError::Query(FieldError {
        field: field.into(),
        message: message.into(),
    })
}

/// The most entries sharing the first 8 bytes of a leaf hash that a lookup by leaf hash checks.
const LEAF_CANDIDATES: usize = 1024;

impl QueryIndex {
    /// The index of the published entry whose leaf hash is `leaf`, if any: from the entry
    /// documents up to the index's watermark, and past it by reading the few entries the
    /// indexer has not yet (at most [`super::MAX_TAIL_SCAN`]). Every answer is checked against
    /// the log's own stored leaf hash.
    pub fn index_of(&self, leaf: &tlog_tiles::Hash) -> Result<Option<u64>, IndexError> {
        let log = self.inner.ledger.log();
        let size = log.size();
        let snapshot = self.snapshot();
        let f = &self.inner.fields;
        let term = Term::from_field_u64(f.leaf, super::schema::leaf_key(leaf));
        // The key is 8 bytes of the hash: every entry sharing them is a candidate, and only
        // the one whose whole leaf hash matches is the answer. Another entry with the same 8
        // bytes as a given one takes ~2^64 hashes to make (a pair made together ~2^32), so
        // more than [`LEAF_CANDIDATES`] of them never share a key.
        let hits = snapshot.searcher.search(
            &TermQuery::new(term, IndexRecordOption::Basic),
            &LogOrder {
                after: None,
                limit: LEAF_CANDIDATES,
            },
        )?;
        for &(index, _) in &hits {
            if index < size && log.leaf_hash_at(index)? == *leaf {
                return Ok(Some(index));
            }
        }
        let from = snapshot.size.min(size);
        if size - from > super::MAX_TAIL_SCAN {
            return Err(IndexError::CatchingUp {
                indexed: snapshot.size,
                size,
            });
        }
        for kv in log.entries(from, size) {
            let (i, bytes) = kv?;
            if crate::log::leaf_hash(&bytes) == *leaf {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Lists the claims matching every filter of `req`, in log order, one page at a time (at
    /// most the page size, and no more claims once the page holds [`MAX_PAGE_BYTES`]), from
    /// the index's latest commit, whose log size the answer carries.
    pub fn list(&self, req: &pb::ListClaimsRequest) -> Result<pb::ListClaimsResponse, IndexError> {
        let n = page_size(req.page_size);
        let after = match decode_token(b'c', &req.page_token)? {
            // A token names the last claim index of a page, which is below any log size.
            Some(b) => match b.try_into().map(u64::from_be_bytes) {
                Ok(i) if i < u64::MAX => Some(i),
                _ => return Err(IndexError::Ledger(bad_token())),
            },
            None => None,
        };
        let query = self.query(req)?;
        let snapshot = self.snapshot();
        let f = &self.inner.fields;
        let searcher = &snapshot.searcher;
        let hits = searcher.search(
            &query,
            &LogOrder {
                after,
                limit: n + 1,
            },
        )?;
        let ledger = &self.inner.ledger;
        let published = ledger.log().size();
        let mut out = Vec::with_capacity(hits.len().min(n));
        let mut bytes = 0;
        let mut more = false;
        let mut last_index = None;
        for (index, addr) in hits {
            // A page is bounded in bytes too: 500 claims of the largest size would be hundreds
            // of megabytes in one response.
            if out.len() == n || bytes >= MAX_PAGE_BYTES {
                more = true;
                break;
            }
            let doc: TantivyDocument = searcher.doc(addr)?;
            let id = doc
                .get_first(f.id)
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let status = doc
                .get_first(f.status)
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let confirmed = doc.get_first(f.confirmed).and_then(|v| v.as_u64()) == Some(1);
            let claim = ledger.claim_at(id, published)?.ok_or_else(|| {
                IndexError::Corrupt(format!("indexed claim {id:?} is not in the log"))
            })?;
            bytes += prost::Message::encoded_len(&claim);
            last_index = Some(index);
            out.push(pb::ClaimListItem {
                claim: Some(claim),
                status: status as i32,
                confirmed,
            });
        }
        let next_page_token = match (more, last_index) {
            (true, Some(i)) => encode_token(b'c', &i.to_be_bytes()),
            _ => String::new(),
        };
        Ok(pb::ListClaimsResponse {
            claims: out,
            next_page_token,
            indexed_size: snapshot.size,
        })
    }

    /// How many claims of the index's latest commit have each effective status (every status
    /// but UNSPECIFIED, in enum order), and the log size that commit covers: one count query
    /// per status, for the explorer's dashboard.
    pub fn count_by_status(&self) -> Result<(Vec<(pb::Status, u64)>, u64), IndexError> {
        let snapshot = self.snapshot();
        let f = &self.inner.fields;
        let mut counts = Vec::new();
        for status in (1..)
            .map_while(|n| pb::Status::try_from(n).ok())
            .filter(|s| *s != pb::Status::Unspecified)
        {
            let query = TermQuery::new(
                Term::from_field_u64(f.status, status as u64),
                IndexRecordOption::Basic,
            );
            let n = snapshot
                .searcher
                .search(&query, &tantivy::collector::Count)?;
            counts.push((status, n as u64));
        }
        Ok((counts, snapshot.size))
    }

    /// The free text of a query made safe to parse: every `:` escaped, so text like
    /// "Update: drones" is words and never names another field of the index, and refused
    /// (INVALID_ARGUMENT) if it uses what the search does not offer: ranges, sets, or an
    /// excluded phrase (`-"drone strike"`, which tantivy 0.27 does not evaluate soundly).
    fn checked_text_query(&self, query: &str) -> Result<String, IndexError> {
        let escaped = query.replace('\\', "\\\\").replace(':', "\\:");
        let ast = query_grammar::parse_query(&escaped)
            .map_err(|_| invalid("query", "cannot be parsed (check quotes and brackets)"))?;
        let mut analyzer = self
            .inner
            .index
            .tokenizer_for_field(self.inner.fields.text)?;
        let mut tokens = |text: &str| {
            let mut stream = analyzer.token_stream(text);
            let mut n = 0;
            while stream.advance() {
                n += 1;
            }
            n
        };
        let mut stack = vec![(false, &ast)];
        while let Some((negated, node)) = stack.pop() {
            match node {
                UserInputAst::Clause(clauses) => {
                    for (occur, q) in clauses {
                        stack.push((negated ^ (*occur == Some(GrammarOccur::MustNot)), q));
                    }
                }
                UserInputAst::Boost(q, _) => stack.push((negated, q)),
                UserInputAst::Leaf(leaf) => match &**leaf {
                    UserInputLeaf::Literal(l) => {
                        if negated && tokens(&l.phrase) > 1 {
                            return Err(invalid(
                                "query",
                                "cannot exclude a phrase; exclude single words (-word)",
                            ));
                        }
                    }
                    UserInputLeaf::All => {}
                    _ => {
                        return Err(invalid(
                            "query",
                            "ranges and sets are not supported; use the list filters",
                        ))
                    }
                },
            }
        }
        Ok(escaped)
    }

    /// The filters of `req` as one query (every clause must match).
    fn query(&self, req: &pb::ListClaimsRequest) -> Result<Box<dyn Query>, IndexError> {
        let f = &self.inner.fields;
        let mut must: Vec<Box<dyn Query>> = Vec::new();
        let term =
            |t: Term| -> Box<dyn Query> { Box::new(TermQuery::new(t, IndexRecordOption::Basic)) };
        if !req.query.trim().is_empty() {
            let text = self.checked_text_query(&req.query)?;
            let mut parser = QueryParser::for_index(&self.inner.index, vec![f.text]);
            parser.set_conjunction_by_default();
            let q = parser
                .parse_query(&text)
                .map_err(|e| invalid("query", format!("cannot be parsed: {e}")))?;
            must.push(q);
        }
        if !req.place.trim().is_empty() {
            let mut analyzer = self.inner.index.tokenizer_for_field(f.place)?;
            let mut stream = analyzer.token_stream(&req.place);
            let mut any = false;
            while let Some(t) = stream.next() {
                must.push(term(Term::from_field_text(f.place, &t.text)));
                any = true;
            }
            if !any {
                return Err(invalid("place", "has no word to match"));
            }
        }
        if req.kind != 0 {
            must.push(term(Term::from_field_u64(f.kind, req.kind as u64)));
        }
        if req.status != 0 {
            must.push(term(Term::from_field_u64(f.status, req.status as u64)));
        }
        if !req.claimant_id.is_empty() {
            must.push(term(Term::from_field_text(f.claimant, &req.claimant_id)));
        }
        // Overlap with [from, to]: starts at or before `to`, ends at or after `from`.
        if let Some(to) = &req.event_time_to {
            must.push(Box::new(RangeQuery::new(
                Bound::Unbounded,
                Bound::Included(Term::from_field_i64(f.event_start, to.seconds)),
            )));
        }
        if let Some(from) = &req.event_time_from {
            must.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_i64(f.event_end, from.seconds)),
                Bound::Unbounded,
            )));
        }
        Ok(match must.len() {
            0 => term(Term::from_field_u64(f.claim, 1)),
            1 => must.remove(0),
            _ => Box::new(BooleanQuery::new(
                must.into_iter().map(|q| (Occur::Must, q)).collect(),
            )),
        })
    }
}

/// Collects the first `limit` matches in log order after claim index `after`: the documents
/// with the smallest `index` above it. Every segment is sorted by `index`
/// ([`super::schema::settings`]), so each is read from the first document past `after` (a
/// binary search of its `index` column) and left after `limit` live matches: a page costs
/// O(segments × (log n + page)) for a broad filter, rather than a pass over every match.
pub(super) struct LogOrder {
    pub after: Option<u64>,
    pub limit: usize,
}

/// One segment's matches, in log order.
pub(super) struct LogOrderSegment {
    ord: SegmentOrdinal,
    found: Vec<(u64, DocAddress)>,
}

impl SegmentCollector for LogOrderSegment {
    type Fruit = Vec<(u64, DocAddress)>;

    // Used only if a caller bypasses `LogOrder::collect_segment`: keeps every match, and
    // `merge_fruits` sorts and cuts.
    fn collect(&mut self, doc: DocId, _: Score) {
        self.found.push((0, DocAddress::new(self.ord, doc)));
    }

    fn harvest(self) -> Self::Fruit {
        self.found
    }
}

impl Collector for LogOrder {
    type Fruit = Vec<(u64, DocAddress)>;
    type Child = LogOrderSegment;

    fn for_segment(&self, ord: SegmentOrdinal, _: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(LogOrderSegment {
            ord,
            found: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        let mut all: Vec<(u64, DocAddress)> = fruits.into_iter().flatten().collect();
        all.sort_unstable_by_key(|(index, _)| *index);
        all.truncate(self.limit);
        Ok(all)
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<Self::Fruit> {
        let column = reader.fast_fields().u64("index")?;
        let alive = reader.alive_bitset();
        let index_of = |doc: DocId| column.first(doc).unwrap_or(0);
        // The first document past `after`: documents are sorted by index.
        let (mut lo, mut hi) = (0, reader.max_doc());
        if let Some(after) = self.after {
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if index_of(mid) <= after {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
        }
        let mut found = Vec::new();
        if lo >= reader.max_doc() {
            return Ok(found);
        }
        let mut scorer = weight.scorer(reader, 1.0)?;
        let mut doc = if scorer.doc() >= lo {
            scorer.doc()
        } else {
            scorer.seek(lo)
        };
        while doc != TERMINATED && found.len() < self.limit {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                let index = index_of(doc);
                if self.after.is_none_or(|a| index > a) {
                    found.push((index, DocAddress::new(ord, doc)));
                }
            }
            doc = scorer.advance();
        }
        Ok(found)
    }
}
