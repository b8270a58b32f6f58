//! Answers kept between reads: claims judged as the log stood at a size (the record and the
//! policy's outcome) and sources as they stood then, reused at another size while the log's
//! change marks say no entry touched them in between
//! ([`IndexView::unchanged_since`](crate::log::IndexView::unchanged_since)). A status read of a
//! claim nothing has touched then decodes and judges nothing again.
//!
//! Every write that can change a kept answer touches its tag (`crate::ledger::apply`): the
//! claim's key for its record (submit, evidence, verdict, retraction), the source's key for
//! the source (registration, grade). A judgement is reused only while its claim and every
//! source it was judged with are untouched, and at a time on the same side of the claim's
//! deadline (`policy::deadline`). Where the log keeps no marks (PostgreSQL) nothing is ever
//! reused, so nothing stale can be served.

use std::sync::Arc;

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};

use super::Judged;
use crate::pb;

/// Memory of judged claims kept, as estimated by [`JudgedWeight`].
const JUDGED_BYTES: u64 = 8 << 20;
/// Shards of the judged claims' cache, each with its part of [`JUDGED_BYTES`]. quick_cache's
/// default (4 per core) would cut it into parts too small for the largest claim kept
/// ([`MAX_JUDGED`]) on a host with many cores.
const SHARDS: usize = 8;
/// The most a judged claim may weigh to be kept: an eighth of a shard.
const MAX_JUDGED: u64 = JUDGED_BYTES / SHARDS as u64 / 8;
/// Sources kept (a source is small, and a log has few).
const SOURCES: usize = 16_384;

/// An answer, the log size it was read at, and its weight.
#[derive(Clone)]
pub(super) struct Kept<T> {
    pub(super) size: u64,
    pub(super) value: T,
    weight: u64,
}

/// A judged claim's memory, roughly: four times its record's encoded size (each string and
/// vector is an allocation of its own, with capacity and headers), its trace and source keys,
/// and a fixed part. Measured with 20,000 claims of one piece of evidence each, all read at
/// 64 streams: the process ended 8 MB larger than a build keeping nothing (15 MB with half
/// these weights).
#[derive(Clone)]
pub(super) struct JudgedWeight;

impl Weighter<String, Kept<Arc<Judged>>> for JudgedWeight {
    fn weight(&self, key: &String, val: &Kept<Arc<Judged>>) -> u64 {
        key.len() as u64 + val.weight
    }
}

/// The kept answers of one [`Reader`](super::Reader) and its clones.
pub(super) struct Answers {
    pub(super) judged: Cache<String, Kept<Arc<Judged>>, JudgedWeight>,
    pub(super) sources: Cache<String, Kept<pb::Source>>,
}

impl Answers {
    pub(super) fn new() -> Answers {
        let judged = match OptionsBuilder::new()
            .estimated_items_capacity(8192)
            .weight_capacity(JUDGED_BYTES)
            .shards(SHARDS)
            .build()
        {
            Ok(options) => Cache::with_options(
                options,
                JudgedWeight,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            ),
            // Constant options that quick_cache accepts; its defaults are only a fallback.
            Err(_) => Cache::with_weighter(8192, JUDGED_BYTES, JudgedWeight),
        };
        Answers {
            judged,
            sources: Cache::new(SOURCES),
        }
    }

    pub(super) fn keep_judged(&self, id: &str, size: u64, judged: Arc<Judged>) {
        use prost::Message;
        let weight = 4 * judged.record.encoded_len() as u64
            + 1024
            + 512 * judged.outcome.trace.len() as u64
            + judged
                .sources
                .iter()
                .map(|t| t.len() as u64 + 48)
                .sum::<u64>();
        // A claim too large to be worth keeping is read each time, and what was kept of it
        // while it was smaller would only be looked at and refused: dropped.
        if weight > MAX_JUDGED {
            self.judged.remove(id);
        } else {
            self.judged.insert(
                id.to_string(),
                Kept {
                    size,
                    value: judged,
                    weight,
                },
            );
        }
    }

    /// Keeps a registered source (an unknown id is not kept: nothing asks for one twice but a
    /// caller guessing ids, who would push out the sources in use).
    pub(super) fn keep_source(&self, id: &str, size: u64, source: pb::Source) {
        self.sources.insert(
            id.to_string(),
            Kept {
                size,
                value: source,
                weight: 1,
            },
        );
    }
}
