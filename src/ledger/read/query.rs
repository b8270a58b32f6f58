//! Listing sources one page at a time, and the opaque page tokens and page sizes every list
//! call shares (claims are listed by the derived index, `crate::index`).

use base64::Engine;

use super::{decode, Reader};
use crate::ledger::error::LedgerError;
use crate::ledger::keys::{self, join};
use crate::pb;

/// The bytes of claims after which a list page ends (it always holds at least one claim).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// Default and maximum page sizes of list calls.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

pub fn page_size(n: u32) -> usize {
    match n as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

pub fn bad_token() -> LedgerError {
    LedgerError::InvalidArgument(crate::claims::validate::FieldError {
        field: "page_token".into(),
        message: "is not a token this server issued".into(),
    })
}

pub fn encode_token(tag: u8, body: &[u8]) -> String {
    let mut raw = vec![tag];
    raw.extend_from_slice(body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_token(tag: u8, token: &str) -> Result<Option<Vec<u8>>, LedgerError> {
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
            // Nothing that is not yet durable, with its grade as of the published size.
            let Some(s) = self.source_of(&rec, durable)? else {
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
}
