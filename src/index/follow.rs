//! The indexer: follows the published log from the index's watermark, and commits each batch
//! of documents with the new watermark in one tantivy commit.
//!
//! A batch re-judges every claim something in it touched, at the batch's end size (the record
//! and its sources cut to that size) and the current time:
//! - a claim submitted, or given evidence, a verdict or a retraction in the batch;
//! - for a new grade, every claim citing the source in the committed index (its `source`
//!   field; a claim that comes to cite it in the same batch is re-judged for that entry);
//! - every claim whose `resolve_by` passed since the last batch (the `deadline` field, a range
//!   from the last sweep's moment to now), the one way time alone changes a status.
//!
//! A claim of the last two kinds that no entry of the batch touched keeps its document when
//! its status and `confirmed` come out as the document has them (nothing else in it depends on
//! a grade or the time): a regrade rewrites the documents whose status it changes, not those
//! of every claim citing the source.
//!
//! None of it scans every claim, and none of it is the writer's work: the writer never waits
//! for the indexer.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost::Message;
use tantivy::collector::DocSetCollector;
use tantivy::query::{RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{IndexWriter, TantivyDocument, Term};
use tlog_tiles::Hash;

use super::{IndexError, Mark, QueryIndex};
use crate::ledger::read::now_unix;
use crate::log::Envelope;
use crate::pb::{self, change::Kind};

/// The indexer's tantivy writer memory (one thread): near tantivy's least (15 MB). A commit
/// every [`COMMIT_INTERVAL`] holds far less than this anyway.
pub const WRITER_MEMORY: usize = 16 * 1024 * 1024;

/// A segment takes part in merges only while it holds fewer documents than this. A merge builds
/// the new segment in memory and maps the old ones; with tantivy's default (10 million) the
/// merges of a million-claim index took the server from ~270 MB to ~500 MB. A query costs
/// O(segments × (log n + page)) (`search::LogOrder`): at a million claims (17 segments against
/// 2) ListClaims did 7–18 % fewer calls/s at 64 streams (BENCHMARKS.md, "Resident memory").
pub const MERGE_MAX_DOCS: usize = 200_000;

/// The indexer's merge policy: tantivy's log merge policy, with [`MERGE_MAX_DOCS`]. Set on
/// every writer the indexer uses, the one a roll-back makes included.
pub(super) fn merge_policy() -> Box<dyn tantivy::merge_policy::MergePolicy> {
    let mut merges = tantivy::merge_policy::LogMergePolicy::default();
    merges.set_max_docs_before_merge(MERGE_MAX_DOCS);
    Box::new(merges)
}

/// The most entries one batch reads; a batch is one commit.
pub const MAX_BATCH: u64 = 20_000;

/// The least time between two commits while the indexer keeps up with the log, unless a caller
/// waits for a size (`min_size`). Each commit is a new segment (a fresh in-memory table, files,
/// an fsync, later a merge): committing every few milliseconds under a steady write load cost
/// the process about 40 % of its CPU, taken from the writer. Batching commits keeps the index
/// within about this much of the log, plus the time to index a batch (SPEC §8's lag bound is
/// 1 s; at 400 ms, with an entry document per entry, the lag reached 1.1 s under the highest
/// write rate, at 250 ms it stays under 0.75 s; BENCHMARKS.md).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(250);

/// `CLAIMLEDGER_FAILPOINT=indexer-abort-before-commit:N` aborts the process after the batch that
/// reads entry N has written its documents and before it commits (a crash test).
const FAILPOINT: &str = "indexer-abort-before-commit:";

fn failpoint() -> Option<u64> {
    let v = std::env::var(crate::log::FAILPOINT_ENV).ok()?;
    let at = v.strip_prefix(FAILPOINT)?.parse().ok();
    if at.is_some() {
        tracing::warn!("{v}: this process will abort on purpose (a crash test)");
    }
    at
}

/// Follows the log and keeps the query index up to date (see the module docs).
pub struct Indexer {
    shared: QueryIndex,
    writer: IndexWriter,
    mark: Mark,
    failpoint: Option<u64>,
    last_commit: Instant,
    /// The last commit's mark: where a failed batch goes back to.
    committed: Mark,
}

impl Indexer {
    pub(super) fn new(shared: QueryIndex, writer: IndexWriter, mark: Mark) -> Indexer {
        Indexer {
            shared,
            writer,
            failpoint: failpoint(),
            last_commit: Instant::now() - COMMIT_INTERVAL,
            committed: mark.clone(),
            mark,
        }
    }

    /// The log size the index covers.
    pub fn watermark(&self) -> u64 {
        self.mark.size
    }

    /// Indexes up to `MAX_BATCH` published entries past the watermark and the deadlines passed
    /// since the last batch, as one commit. Returns false if there was nothing to do.
    pub fn step(&mut self) -> Result<bool, IndexError> {
        let ledger = &self.shared.inner.ledger;
        let log = ledger.log();
        let start = self.mark.size;
        let end = log.size().min(start.saturating_add(MAX_BATCH));
        let now = now_unix();
        if end == start && now <= self.mark.deadlines_before {
            return Ok(false);
        }
        let mut claims: BTreeSet<String> = BTreeSet::new();
        // Claims submitted in this batch, with their submission's leaf hash: none has a
        // document yet, in the committed index (it covers the entries before `start` only) or
        // in the writer (a failed batch is rolled back), so there is no document of theirs to
        // delete.
        let mut submitted: HashMap<String, Hash> = HashMap::new();
        let mut graded: BTreeSet<String> = BTreeSet::new();
        let mut leaf = None;
        let fields = &self.shared.inner.fields;
        for kv in log.entries_with_leaf(start, end) {
            let (i, bytes, hash) = kv?;
            leaf = Some(hash);
            let env = Envelope::decode(&bytes[..])
                .map_err(|e| IndexError::Corrupt(format!("entry {i}: {e}")))?;
            let change = pb::Change::decode(&env.body[..])
                .map_err(|e| IndexError::Corrupt(format!("entry {i}: not a Change: {e}")))?;
            // Every entry is found by its leaf hash: a claim's submission by its claim's
            // document, any other entry by a document of its own, never replaced.
            if !matches!(change.kind, Some(Kind::ClaimSubmitted(_))) {
                self.writer.add_document(fields.entry_document(i, &hash))?;
            }
            // A claim that comes to cite a source in this batch is re-judged for that entry
            // anyway, so a grade in the batch needs only the citations already committed.
            match change.kind {
                Some(Kind::ClaimSubmitted(c)) => {
                    submitted.insert(c.id.clone(), hash);
                    claims.insert(c.id);
                }
                Some(Kind::EvidenceAdded(e)) => {
                    claims.insert(e.claim_id);
                }
                Some(Kind::VerdictRecorded(v)) => {
                    claims.insert(v.claim_id);
                }
                Some(Kind::ClaimRetracted(r)) => {
                    claims.insert(r.claim_id);
                }
                Some(Kind::SourceGraded(g)) => {
                    graded.insert(g.source_id);
                }
                Some(Kind::SourceRegistered(_)) | None => {}
            }
        }
        // The claims found below were judged at the last commit, and are left as they are if
        // judging them again gives the same status: the searcher must be that commit's.
        let mut snapshot = self.shared.snapshot();
        if snapshot.size != self.committed.size {
            self.shared.publish(self.committed.size)?;
            snapshot = self.shared.snapshot();
        }
        let searcher = snapshot.searcher;
        // Claims no entry of the batch touched, only a grade or the time: each with the status
        // and `confirmed` its document holds.
        let mut rejudged: HashMap<String, (u64, u64)> = HashMap::new();
        let mut lookup = |query: &dyn tantivy::query::Query| -> Result<(), IndexError> {
            for addr in searcher.search(query, &DocSetCollector)? {
                let doc: TantivyDocument = searcher.doc(addr)?;
                let Some(id) = doc.get_first(fields.id).and_then(|v| v.as_str()) else {
                    continue;
                };
                if claims.contains(id) {
                    continue;
                }
                let Some(was) = fields.stored_judgement(&doc) else {
                    return Err(IndexError::Corrupt(format!(
                        "the document of claim {id:?} has no status"
                    )));
                };
                rejudged.insert(id.to_string(), was);
            }
            Ok(())
        };
        for source in &graded {
            let term = Term::from_field_text(fields.source, source);
            lookup(&TermQuery::new(term, IndexRecordOption::Basic))?;
        }
        if now > self.mark.deadlines_before {
            lookup(&RangeQuery::new(
                Bound::Included(Term::from_field_i64(
                    fields.deadline,
                    self.mark.deadlines_before,
                )),
                Bound::Excluded(Term::from_field_i64(fields.deadline, now)),
            ))?;
        }
        if claims.is_empty() && rejudged.is_empty() && end == start {
            // Only time passed, and no deadline with it: nothing to commit. After a restart
            // the deadline window is swept again from the last commit, for nothing.
            self.mark.deadlines_before = now.max(self.mark.deadlines_before);
            return Ok(false);
        }
        let mut docs = Vec::with_capacity(claims.len() + rejudged.len());
        let touched = claims.iter().map(|id| (id, None));
        for (id, was) in touched.chain(rejudged.iter().map(|(id, was)| (id, Some(*was)))) {
            let Some(rec) = ledger.record_at(id, end)? else {
                // A claim the committed index knows but the log at `end` does not: impossible
                // for a log this index matches (open checks the leaf hash at the watermark).
                return Err(IndexError::Corrupt(format!(
                    "claim {id:?} is indexed but not in the log at size {end}"
                )));
            };
            let out = ledger.outcome_at(&rec, end, now)?;
            // Only the status and `confirmed` of a document change with a grade or the time:
            // when neither does, the document is already right. A regrade rewrites the
            // documents whose status it changes, not every claim citing the source.
            if was == Some(super::schema::judgement(&out)) {
                continue;
            }
            let index = rec
                .claim
                .as_ref()
                .map(|c| c.index)
                .ok_or_else(|| IndexError::Corrupt(format!("claim {id:?} without a body")))?;
            let submission = match submitted.get(id) {
                Some(hash) => *hash,
                None => log.leaf_hash_at(index)?,
            };
            let doc = fields
                .document(&rec, &out, &submission)
                .ok_or_else(|| IndexError::Corrupt(format!("claim {id:?} without a body")))?;
            docs.push((index, id, doc));
        }
        // In log order, the order lists are read in.
        docs.sort_unstable_by_key(|(index, _, _)| *index);
        for (_, id, doc) in docs {
            // A delete is a term looked up in every segment at the commit: most claims of a
            // batch under a write load are new ones, and need none.
            if !submitted.contains_key(id.as_str()) {
                self.writer
                    .delete_term(Term::from_field_text(fields.id, id));
            }
            self.writer.add_document(doc)?;
        }
        if self.failpoint.is_some_and(|n| start <= n && n < end) {
            tracing::error!("failpoint: aborting after indexing entries {start}..{end}");
            std::process::abort();
        }
        self.mark = Mark {
            size: end,
            leaf: match leaf {
                Some(h) => h.to_string(),
                None => self.mark.leaf.clone(),
            },
            deadlines_before: now.max(self.mark.deadlines_before),
            ..self.mark.clone()
        };
        self.commit()?;
        Ok(true)
    }

    /// Commits the documents written so far with the current mark, and makes them searchable.
    fn commit(&mut self) -> Result<(), IndexError> {
        let payload = serde_json::to_string(&self.mark)
            .map_err(|e| IndexError::Corrupt(format!("commit mark: {e}")))?;
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.last_commit = Instant::now();
        self.committed = self.mark.clone();
        self.shared.publish(self.mark.size)
    }

    /// Goes back to the last commit after a failed batch: drops every document written since
    /// (a retried batch writes them again) and the mark it had moved.
    fn roll_back(&mut self) -> Result<(), IndexError> {
        self.writer.rollback()?;
        self.writer.set_merge_policy(merge_policy());
        self.mark = self.committed.clone();
        Ok(())
    }

    /// [`Indexer::step`], rolled back to the last commit if it fails. The outer error is a
    /// failed roll-back: the writer's state is then unknown, and the indexer must stop.
    fn step_or_roll_back(&mut self) -> Result<Result<bool, IndexError>, IndexError> {
        match self.step() {
            Ok(done) => Ok(Ok(done)),
            Err(e) => {
                self.roll_back()?;
                Ok(Err(e))
            }
        }
    }

    /// Commits the mark if entries were read since the last commit without changing a
    /// document, so a restart does not read them again.
    pub fn flush(&mut self) -> Result<(), IndexError> {
        if self.mark.size > self.committed.size {
            self.commit()?;
        }
        Ok(())
    }

    /// Indexes until the watermark reaches the log's published size.
    pub fn catch_up(&mut self) -> Result<u64, IndexError> {
        while self.mark.size < self.shared.inner.ledger.log().size() {
            self.step()?;
        }
        Ok(self.mark.size)
    }

    /// Follows the log until it closes: a batch whenever entries are published, and at least
    /// once a second for the deadlines. A failed batch is retried after a pause, with the
    /// failure shown by [`QueryIndex::failing`].
    pub async fn run(mut self, mut closing: tokio::sync::watch::Receiver<bool>) {
        let shared = self.shared.clone();
        loop {
            if *closing.borrow_and_update() {
                // Keep what was read: the next start resumes from here.
                let flushed = tokio::task::spawn_blocking(move || self.flush()).await;
                if let Ok(Err(e)) = flushed {
                    tracing::warn!("the query index's last mark was not committed: {e}");
                }
                return;
            }
            let (back, done) = match tokio::task::spawn_blocking(move || {
                let r = self.step_or_roll_back();
                (self, r)
            })
            .await
            {
                Ok((back, Ok(done))) => (back, done),
                Ok((_, Err(e))) => {
                    let why =
                        format!("the indexer stopped: a failed batch was not rolled back: {e}");
                    tracing::error!("{why}");
                    shared.inner.failure.send_replace(Some(why));
                    return;
                }
                Err(e) => {
                    tracing::error!("the indexer stopped: {e}");
                    shared
                        .inner
                        .failure
                        .send_replace(Some(format!("the indexer stopped: {e}")));
                    return;
                }
            };
            self = back;
            match done {
                Ok(true) => {
                    shared.inner.failure.send_replace(None);
                    // Keeping up: gather more before the next commit, unless someone waits
                    // for a size beyond what is searchable.
                    let behind = shared.inner.ledger.log().size() > self.mark.size + MAX_BATCH / 2;
                    let pause = COMMIT_INTERVAL.saturating_sub(self.last_commit.elapsed());
                    let hurry = shared.inner.hurry.notified();
                    if !behind
                        && !pause.is_zero()
                        && shared.inner.wanted.load(Ordering::Relaxed) <= self.mark.size
                    {
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = hurry => {}
                            r = closing.changed() => if r.is_err() { return },
                        }
                    }
                }
                Ok(false) => {
                    let log = shared.inner.ledger.log().clone();
                    let have = self.mark.size;
                    tokio::select! {
                        r = log.wait_beyond(have) => if r.is_none() { return },
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        r = closing.changed() => if r.is_err() { return },
                    }
                }
                Err(e) => {
                    tracing::error!("the indexer failed, retrying: {e}");
                    shared.inner.failure.send_replace(Some(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        r = closing.changed() => if r.is_err() { return },
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use tantivy::collector::DocSetCollector;
    use tantivy::query::TermQuery;
    use tantivy::schema::{IndexRecordOption, Value};
    use tantivy::{TantivyDocument, Term};

    use crate::index::QueryIndex;
    use crate::ledger::{LedgerApply, Reader};
    use crate::log::{Log, NoApply, Options};
    use crate::pb::{self, change::Kind};

    /// A lookup by leaf hash finds an entry by the first 8 bytes of its hash, so every entry
    /// sharing them is a candidate: the one whose whole hash matches is the answer, wherever
    /// it comes among them.
    #[tokio::test]
    async fn a_lookup_by_leaf_hash_checks_every_entry_sharing_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Options::default(), Arc::new(NoApply)).expect("open");
        let mut leaves = Vec::new();
        for i in 0..4 {
            let body = pb::Change {
                request_id: format!("r{i}"),
                ..Default::default()
            };
            let r = log
                .append("test", body.encode_to_vec())
                .await
                .expect("append");
            leaves.push(r.leaf_hash);
        }
        let (index, mut indexer) =
            QueryIndex::open(dir.path(), Reader::new(log.clone())).expect("index");
        assert_eq!(indexer.catch_up().expect("catch up"), 4);
        assert_eq!(index.index_of(&leaves[3]).expect("lookup"), Some(3));
        // Entry 0's document again, under entry 3's key: the first candidate in log order is
        // now entry 0, whose hash is not the one asked for.
        let fields = &index.inner.fields;
        let mut near = leaves[3];
        near.0[31] ^= 1;
        let doc = fields.entry_document(0, &near);
        indexer.writer.add_document(doc).expect("add");
        indexer.commit().expect("commit");
        assert_eq!(index.index_of(&leaves[3]).expect("lookup"), Some(3));
        assert_eq!(index.index_of(&near).expect("lookup"), None);
        log.shutdown().await.expect("shutdown");
    }

    /// A batch that fails after writing documents leaves none of them behind, and its retry
    /// starts again from the last commit: otherwise the next commit would carry them, and a
    /// claim submitted in the batch (written without a delete) would be indexed twice.
    #[tokio::test]
    async fn a_failed_batch_is_rolled_back_to_the_last_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Options::default(), Arc::new(NoApply)).expect("open");
        let append = |change: pb::Change| {
            let log = log.clone();
            async move {
                log.append("test", change.encode_to_vec())
                    .await
                    .expect("append")
            }
        };
        for i in 0..2 {
            append(pb::Change {
                request_id: format!("r{i}"),
                ..Default::default()
            })
            .await;
        }
        let (index, mut indexer) =
            QueryIndex::open(dir.path(), Reader::new(log.clone())).expect("index");
        assert_eq!(indexer.catch_up().expect("catch up"), 2);
        // An entry, then a claim with no state behind it (NoApply): the batch writes the
        // entry's document, then fails judging the claim.
        append(pb::Change {
            request_id: "r2".into(),
            ..Default::default()
        })
        .await;
        let claim = pb::Claim {
            id: "c-0000000000000001".into(),
            ..Default::default()
        };
        append(pb::Change {
            request_id: "r3".into(),
            kind: Some(pb::change::Kind::ClaimSubmitted(claim)),
            ..Default::default()
        })
        .await;
        let failed = indexer.step_or_roll_back().expect("rolled back");
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(indexer.watermark(), 2);
        // Whatever commits next holds only what the last commit held.
        indexer.commit().expect("commit");
        assert_eq!(index.inner.reader.searcher().num_docs(), 2);
        // The writer the roll-back made still writes, and the retry fails the same way.
        let doc = index
            .inner
            .fields
            .entry_document(2, &log.leaf_hash_at(2).expect("leaf"));
        indexer.writer.add_document(doc).expect("add");
        indexer.commit().expect("commit");
        assert_eq!(index.inner.reader.searcher().num_docs(), 3);
        assert!(indexer.step_or_roll_back().expect("rolled back").is_err());
        assert_eq!(indexer.watermark(), 2);
        log.shutdown().await.expect("shutdown");
    }

    /// A grade re-judges the claims citing the source, and rewrites only the documents whose
    /// status it changes: a grade that changes none deletes no document.
    #[tokio::test]
    async fn a_regrade_rewrites_only_the_documents_whose_status_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Options::default(), Arc::new(LedgerApply)).expect("open");
        let mut n = 0;
        let mut append = |kind: Kind| {
            n += 1;
            let change = pb::Change {
                request_id: format!("r{n}"),
                request_digest: vec![0; 32],
                kind: Some(kind),
            };
            let log = log.clone();
            async move {
                log.append("test", change.encode_to_vec())
                    .await
                    .expect("append")
            }
        };
        let source = |id: &str, side: &str, role: pb::Role, grade: pb::Reliability| {
            Kind::SourceRegistered(pb::Source {
                id: id.into(),
                name: id.into(),
                kind: pb::SourceKind::Other as i32,
                side: side.into(),
                role: role as i32,
                reliability: grade as i32,
                ..Default::default()
            })
        };
        let grade = |id: &str, grade: pb::Reliability| {
            Kind::SourceGraded(pb::SourceGrade {
                source_id: id.into(),
                reliability: grade as i32,
                rationale: "test".into(),
            })
        };
        append(source("ru-mod", "RU", pb::Role::Party, pb::Reliability::D)).await;
        // An independent wire service graded C: its report does not qualify yet.
        append(source("wire", "", pb::Role::NonParty, pb::Reliability::C)).await;
        for id in ["c-1", "c-2"] {
            append(Kind::ClaimSubmitted(pb::Claim {
                id: id.into(),
                kind: pb::ClaimKind::Strike as i32,
                modality: pb::Modality::AssertedFact as i32,
                summary: format!("Strike {id}"),
                claimant_id: "ru-mod".into(),
                ..Default::default()
            }))
            .await;
        }
        append(Kind::EvidenceAdded(pb::Evidence {
            id: "e-1".into(),
            claim_id: "c-2".into(),
            source_id: "wire".into(),
            stance: pb::Stance::Supports as i32,
            kind: pb::EvidenceKind::MediaReport as i32,
            url: "https://example.org/wire".into(),
            credibility: 2,
            ..Default::default()
        }))
        .await;
        let (index, mut indexer) =
            QueryIndex::open(dir.path(), Reader::new(log.clone())).expect("index");
        indexer.catch_up().expect("catch up");
        let fields = index.inner.fields.clone();
        let status = |id: &str| {
            let searcher = index.inner.reader.searcher();
            let query = TermQuery::new(
                Term::from_field_text(fields.id, id),
                IndexRecordOption::Basic,
            );
            let found = searcher.search(&query, &DocSetCollector).expect("search");
            assert_eq!(found.len(), 1, "{id} has one document");
            let addr = found.into_iter().next().expect("a document");
            let doc: TantivyDocument = searcher.doc(addr).expect("doc");
            let status = doc.get_first(fields.status).and_then(|v| v.as_u64());
            status.expect("a status")
        };
        let deleted = || {
            let searcher = index.inner.reader.searcher();
            let segments = searcher.segment_readers().iter();
            segments.map(|s| s.num_deleted_docs()).sum::<u32>()
        };
        let claimed = pb::Status::Claimed as i32 as u64;
        assert_eq!((status("c-1"), status("c-2")), (claimed, claimed));
        assert_eq!(deleted(), 0);

        // Both claims cite their claimant, and neither status moves with its grade.
        append(grade("ru-mod", pb::Reliability::E)).await;
        indexer.catch_up().expect("catch up");
        assert_eq!((status("c-1"), status("c-2")), (claimed, claimed));
        assert_eq!(deleted(), 0, "no document was rewritten");

        // The wire service's report now qualifies: c-2 is corroborated, its document replaced.
        append(grade("wire", pb::Reliability::B)).await;
        indexer.catch_up().expect("catch up");
        let corroborated = pb::Status::Corroborated as i32 as u64;
        assert_eq!((status("c-1"), status("c-2")), (claimed, corroborated));
        assert_eq!(deleted(), 1, "only c-2's document was rewritten");
        log.shutdown().await.expect("shutdown");
    }
}
