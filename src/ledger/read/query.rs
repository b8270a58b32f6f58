//! The list queries: sources and claims, one page at a time, with opaque page tokens. Each
//! page is driven by the most selective index the request allows, and every candidate is then
//! checked against every filter.

use base64::Engine;

use super::{decode, Reader};
use crate::claims::validate::words;
use crate::ledger::error::LedgerError;
use crate::ledger::keys::{self, join};
use crate::ledger::status::source_as_of;
use crate::ledger::terms;
use crate::pb;

/// The bytes of claims after which a list page ends (it always holds at least one claim).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// Default and maximum page sizes of list calls.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

fn page_size(n: u32) -> usize {
    match n as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn bad_token() -> LedgerError {
    LedgerError::InvalidArgument(crate::claims::validate::FieldError {
        field: "page_token".into(),
        message: "is not a token this server issued".into(),
    })
}

fn encode_token(tag: u8, body: &[u8]) -> String {
    let mut raw = vec![tag];
    raw.extend_from_slice(body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_token(tag: u8, token: &str) -> Result<Option<Vec<u8>>, LedgerError> {
    if token.is_empty() {
        return Ok(None);
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad_token())?;
    match raw.split_first() {
        Some((t, body)) if *t == tag => Ok(Some(body.to_vec())),
        _ => Err(bad_token()),
    }
}

impl Reader {
    pub fn list_sources(
        &self,
        size: u32,
        token: &str,
    ) -> Result<(Vec<pb::Source>, String), LedgerError> {
        let n = page_size(size);
        let start = match decode_token(b's', token)? {
            // Resume just after the last id returned.
            Some(last) => join(&[keys::SOURCE, &last, &[0]]),
            None => keys::SOURCE.to_vec(),
        };
        let mut out = Vec::new();
        let mut next = String::new();
        let durable = self.log.size();
        for kv in self.idx.scan_from(keys::SOURCE, &start) {
            let (_, v) = kv?;
            let rec: pb::GetSourceResponse = decode(&v, "source record")?;
            // As in `lookup_source`: nothing that is not yet durable.
            let Some(s) = source_as_of(&rec, Some(durable)) else {
                continue;
            };
            if out.len() == n {
                if let Some(last) = out.last().map(|s: &pb::Source| s.id.clone()) {
                    next = encode_token(b's', last.as_bytes());
                }
                break;
            }
            out.push(s);
        }
        Ok((out, next))
    }

    /// Lists claims matching every filter, in log order, one page at a time: at most the page
    /// size, and no more claims once the page holds [`MAX_PAGE_BYTES`].
    pub fn list_claims(
        &self,
        req: &pb::ListClaimsRequest,
    ) -> Result<pb::ListClaimsResponse, LedgerError> {
        let n = page_size(req.page_size);
        let after = match decode_token(b'c', &req.page_token)? {
            Some(b) => Some(u64::from_be_bytes(b.try_into().map_err(|_| bad_token())?)),
            None => None,
        };
        let query_words = words(&req.query);
        let place_words = words(&req.place);
        let time_filter = req.event_time_from.is_some() || req.event_time_to.is_some();
        let status_filter = req.status != 0;

        // Drive the scan with the most selective index the request allows; every candidate is
        // then checked against all filters. Statuses that time alone can change (CLAIMED ↔
        // INCONCLUSIVE past a deadline) are driven by log order and checked live.
        let time_sensitive = [pb::Status::Claimed as i32, pb::Status::Inconclusive as i32];
        let prefix: Vec<u8> = if !req.claimant_id.is_empty() {
            keys::bucket(keys::CLAIMANT, &req.claimant_id)
        } else if let Some(w) = place_words.first() {
            keys::bucket(keys::PLACE, w)
        } else if let Some(w) = query_words.first() {
            keys::bucket(keys::WORD, w)
        } else if req.kind != 0 {
            keys::enum_bucket(keys::KIND, req.kind)
        } else if status_filter && !time_sensitive.contains(&req.status) {
            keys::enum_bucket(keys::STATUS, req.status)
        } else {
            keys::ORDER.to_vec()
        };
        let time_only = time_filter && prefix.starts_with(keys::ORDER);
        let start = match after {
            Some(i) => join(&[
                &prefix,
                &i.checked_add(1).ok_or_else(bad_token)?.to_be_bytes(),
            ]),
            None => prefix.clone(),
        };

        let mut out = Vec::new();
        let mut bytes = 0;
        let mut last_index = None;
        let mut more = false;
        let durable = self.log.size();
        let mut consider = |claim_index: u64, id: &str| -> Result<bool, LedgerError> {
            // Candidates come in log order; from the first one not yet durable on, none is.
            if claim_index >= durable {
                return Ok(false);
            }
            let rec = self.record(id)?;
            let Some(claim) = rec.claim.as_ref() else {
                return Ok(true);
            };
            if !self.matches(req, claim, &query_words, &place_words, time_filter) {
                return Ok(true);
            }
            let now = self.evaluate_now(&rec)?;
            if status_filter && now.status as i32 != req.status {
                return Ok(true);
            }
            // A page is bounded in bytes too: 500 claims of the largest size would be hundreds
            // of megabytes in one response.
            if out.len() == n || bytes >= MAX_PAGE_BYTES {
                more = true;
                return Ok(false);
            }
            bytes += prost::Message::encoded_len(claim);
            last_index = Some(claim_index);
            out.push(pb::ClaimListItem {
                claim: Some(claim.clone()),
                status: now.status as i32,
                confirmed: now.confirmed,
            });
            Ok(true)
        };
        if time_only {
            // Events overlapping [from, to] start in [from - longest span, to]: collect that
            // window of the event-time index, then walk it in log order like any other index.
            let span = self
                .idx
                .get(keys::EVENT_SPAN)?
                .and_then(|v| Some(i64::from_be_bytes(v.as_ref().try_into().ok()?)))
                .unwrap_or(0);
            let lo = req
                .event_time_from
                .as_ref()
                .map_or(i64::MIN, |f| f.seconds.saturating_sub(span));
            let hi = req.event_time_to.as_ref().map_or(i64::MAX, |t| t.seconds);
            let mut hits: Vec<(u64, String)> = Vec::new();
            for kv in self
                .idx
                .scan_from(keys::EVENT, &join(&[keys::EVENT, &keys::ordered_time(lo)]))
            {
                let (k, v) = kv?;
                let Some(start) = keys::time_of(&k[keys::EVENT.len()..]) else {
                    continue;
                };
                if start > hi {
                    break;
                }
                let Some(i) = keys::trailing_index(&k) else {
                    continue;
                };
                if after.is_none_or(|a| i > a) {
                    hits.push((i, String::from_utf8_lossy(&v).into_owned()));
                }
            }
            hits.sort();
            for (i, id) in hits {
                if !consider(i, &id)? {
                    break;
                }
            }
        } else {
            for kv in self.idx.scan_from(&prefix, &start) {
                let (k, v) = kv?;
                let Some(claim_index) = keys::trailing_index(&k) else {
                    continue;
                };
                if !consider(claim_index, &String::from_utf8_lossy(&v))? {
                    break;
                }
            }
        }
        let next_page_token = match (more, last_index) {
            (true, Some(i)) => encode_token(b'c', &i.to_be_bytes()),
            _ => String::new(),
        };
        Ok(pb::ListClaimsResponse {
            claims: out,
            next_page_token,
        })
    }

    fn matches(
        &self,
        req: &pb::ListClaimsRequest,
        claim: &pb::Claim,
        query_words: &[String],
        place_words: &[String],
        time_filter: bool,
    ) -> bool {
        if req.kind != 0 && claim.kind != req.kind {
            return false;
        }
        if !req.claimant_id.is_empty() && claim.claimant_id != req.claimant_id {
            return false;
        }
        if !place_words.is_empty() {
            let have = terms::place_words(claim);
            if !place_words.iter().all(|w| have.binary_search(w).is_ok()) {
                return false;
            }
        }
        if !query_words.is_empty() {
            let have = terms::text_words(claim);
            if !query_words.iter().all(|w| have.binary_search(w).is_ok()) {
                return false;
            }
        }
        if time_filter {
            let Some(t) = &claim.event_time else {
                return false;
            };
            let Some(start) = t.start.as_ref().map(|s| s.seconds) else {
                return false;
            };
            let end = t.end.as_ref().map(|e| e.seconds).unwrap_or(start);
            if let Some(from) = &req.event_time_from {
                if end < from.seconds {
                    return false;
                }
            }
            if let Some(to) = &req.event_time_to {
                if start > to.seconds {
                    return false;
                }
            }
        }
        true
    }
}
