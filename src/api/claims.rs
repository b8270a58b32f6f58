//! `ClaimService`: claims, evidence, verdicts, retractions, and "is it confirmed, and why?".

use tonic::{Request, Response, Status};

use super::{auth, error, request_key, Ctx};
use crate::claims::{policy, validate};
use crate::index::{IndexError, MIN_SIZE_WAIT};
use crate::ledger::read::StatusAnswer;
use crate::ledger::{derive_id, scoped_request_id};
use crate::pb::{self, change::Kind, claim_service_server::ClaimService};

pub struct Claims(pub Ctx);

fn claim_id(id: &str) -> Result<(), Status> {
    validate::id("claim_id", id).map_err(error::field)
}

impl Claims {
    /// The cluster of the claim's claimant, for the cluster rules of `auth::rules`. Both the
    /// claimant of a claim and the cluster of a source are fixed when they are logged, so
    /// reading them before the write cannot race with it.
    fn claimant_cluster(&self, claim_id: &str) -> Result<String, Status> {
        let claim = self.0.reader.claim_only(claim_id).map_err(error::ledger)?;
        let source = self
            .0
            .reader
            .source(&claim.claimant_id)
            .map_err(error::ledger)?;
        Ok(source.source.map(|s| s.cluster).unwrap_or_default())
    }
}

#[tonic::async_trait]
impl ClaimService for Claims {
    async fn submit_claim(
        &self,
        req: Request<pb::SubmitClaimRequest>,
    ) -> Result<Response<pb::SubmitClaimResponse>, Status> {
        let actor = auth::principal(&req).name;
        let mut r = req.into_inner();
        // Server-assigned fields are not the client's content: clear them before the digest,
        // so a retry that echoes a response back is still the same request.
        if let Some(c) = r.claim.as_mut() {
            c.id.clear();
            c.index = 0;
            c.logged_at = None;
        }
        let mut claim = r.claim.clone().ok_or_else(|| error::missing("claim"))?;
        validate::claim(&claim).map_err(error::field)?;
        let (request_id, digest) = request_key(&r, &r.request_id, |m| m.request_id.clear())?;
        claim.id = derive_id("c", &scoped_request_id(&actor, &request_id));
        let id = claim.id.clone();
        let change = pb::Change {
            request_id,
            request_digest: digest,
            kind: Some(Kind::ClaimSubmitted(claim)),
        };
        let receipt = self.0.write(&actor, change).await?;
        let claim = self.0.reader.claim_only(&id).map_err(error::ledger)?;
        Ok(Response::new(pb::SubmitClaimResponse {
            claim: Some(claim),
            receipt: Some(receipt),
        }))
    }

    async fn add_evidence(
        &self,
        req: Request<pb::AddEvidenceRequest>,
    ) -> Result<Response<pb::AddEvidenceResponse>, Status> {
        let actor = auth::principal(&req).name;
        let mut r = req.into_inner();
        if let Some(e) = r.evidence.as_mut() {
            e.id.clear();
            e.claim_id.clear();
            e.index = 0;
            e.logged_at = None;
        }
        claim_id(&r.claim_id)?;
        let mut ev = r
            .evidence
            .clone()
            .ok_or_else(|| error::missing("evidence"))?;
        validate::evidence(&ev).map_err(error::field)?;
        let (request_id, digest) = request_key(&r, &r.request_id, |m| m.request_id.clear())?;
        ev.id = derive_id("e", &scoped_request_id(&actor, &request_id));
        ev.claim_id = r.claim_id.clone();
        let id = ev.id.clone();
        let change = pb::Change {
            request_id,
            request_digest: digest,
            kind: Some(Kind::EvidenceAdded(ev)),
        };
        let receipt = self.0.write(&actor, change).await?;
        let ev = self
            .0
            .reader
            .evidence_at(&r.claim_id, receipt.index)
            .map_err(error::ledger)?;
        if ev.id != id {
            return Err(Status::internal("written evidence not found after commit"));
        }
        Ok(Response::new(pb::AddEvidenceResponse {
            evidence: Some(ev),
            receipt: Some(receipt),
        }))
    }

    async fn record_verdict(
        &self,
        req: Request<pb::RecordVerdictRequest>,
    ) -> Result<Response<pb::RecordVerdictResponse>, Status> {
        let who = auth::principal(&req);
        let actor = who.name.clone();
        let mut r = req.into_inner();
        if let Some(v) = r.verdict.as_mut() {
            v.id.clear();
            v.claim_id.clear();
            v.reviewer.clear();
            v.index = 0;
            v.logged_at = None;
        }
        claim_id(&r.claim_id)?;
        auth::rules::may_record_verdict(&who, &self.claimant_cluster(&r.claim_id)?)?;
        let mut v = r.verdict.clone().ok_or_else(|| error::missing("verdict"))?;
        validate::verdict(&v).map_err(error::field)?;
        let (request_id, digest) = request_key(&r, &r.request_id, |m| m.request_id.clear())?;
        v.id = derive_id("v", &scoped_request_id(&actor, &request_id));
        v.claim_id = r.claim_id.clone();
        let id = v.id.clone();
        let change = pb::Change {
            request_id,
            request_digest: digest,
            kind: Some(Kind::VerdictRecorded(v)),
        };
        let receipt = self.0.write(&actor, change).await?;
        let v = self
            .0
            .reader
            .verdict_at(&r.claim_id, receipt.index)
            .map_err(error::ledger)?;
        if v.id != id {
            return Err(Status::internal("written verdict not found after commit"));
        }
        Ok(Response::new(pb::RecordVerdictResponse {
            verdict: Some(v),
            receipt: Some(receipt),
        }))
    }

    async fn retract_claim(
        &self,
        req: Request<pb::RetractClaimRequest>,
    ) -> Result<Response<pb::RetractClaimResponse>, Status> {
        let who = auth::principal(&req);
        let actor = who.name.clone();
        let mut r = req.into_inner();
        if let Some(x) = r.retraction.as_mut() {
            x.claim_id.clear();
            x.index = 0;
            x.logged_at = None;
        }
        claim_id(&r.claim_id)?;
        auth::rules::may_retract(&who, &self.claimant_cluster(&r.claim_id)?)?;
        let mut x = r
            .retraction
            .clone()
            .ok_or_else(|| error::missing("retraction"))?;
        validate::retraction(&x).map_err(error::field)?;
        let (request_id, digest) = request_key(&r, &r.request_id, |m| m.request_id.clear())?;
        x.claim_id = r.claim_id.clone();
        let change = pb::Change {
            request_id,
            request_digest: digest,
            kind: Some(Kind::ClaimRetracted(x)),
        };
        let receipt = self.0.write(&actor, change).await?;
        let x = self
            .0
            .reader
            .retraction_at(&r.claim_id, receipt.index)
            .map_err(error::ledger)?;
        Ok(Response::new(pb::RetractClaimResponse {
            retraction: Some(x),
            receipt: Some(receipt),
        }))
    }

    async fn get_claim(
        &self,
        req: Request<pb::GetClaimRequest>,
    ) -> Result<Response<pb::GetClaimResponse>, Status> {
        let id = req.into_inner().id;
        validate::id("id", &id).map_err(error::field)?;
        Ok(Response::new(
            self.0.reader.claim(&id).map_err(error::ledger)?,
        ))
    }

    async fn get_claim_status(
        &self,
        req: Request<pb::GetClaimStatusRequest>,
    ) -> Result<Response<pb::GetClaimStatusResponse>, Status> {
        let r = req.into_inner();
        claim_id(&r.claim_id)?;
        let ans = self
            .0
            .reader
            .status(&r.claim_id, r.as_of_size)
            .map_err(error::ledger)?;
        Ok(Response::new(status_response(
            &self.0,
            &r.claim_id,
            &ans,
            r.with_proof,
        )?))
    }

    async fn list_claims(
        &self,
        req: Request<pb::ListClaimsRequest>,
    ) -> Result<Response<pb::ListClaimsResponse>, Status> {
        Ok(Response::new(list_claims(&self.0, req.into_inner()).await?))
    }
}

/// The GetClaimStatus answer for `ans` (the status of `claim_id` at one log size), with the
/// checkpoint of that size and the inclusion proofs of the claim's entries when `with_proof`.
/// Shared by the gRPC handler and the claim page (`crate::http::pages`).
pub(crate) fn status_response(
    ctx: &Ctx,
    claim_id: &str,
    ans: &StatusAnswer,
    with_proof: bool,
) -> Result<pb::GetClaimStatusResponse, Status> {
    let o = &ans.outcome;
    let mut resp = pb::GetClaimStatusResponse {
        claim_id: claim_id.to_string(),
        status: o.status as i32,
        computed_status: o.computed_status as i32,
        confirmed: o.confirmed,
        flags: o.flags.clone(),
        needs_review: o.needs_review,
        trace: o.trace.clone(),
        policy: policy::POLICY_ID.to_string(),
        as_of_size: ans.as_of_size,
        supporting_groups: o.supporting_groups,
        contradicting_groups: o.contradicting_groups,
        ..Default::default()
    };
    if with_proof {
        // The checkpoint and every proof come from the one size the answer is about.
        let size = ans.as_of_size;
        let cp = ctx.log.checkpoint_at(size).map_err(error::log)?;
        resp.checkpoint = cp.note;
        for &index in &ans.record.entry_indexes {
            let hashes = ctx.log.inclusion_proof(index, size).map_err(error::log)?;
            let leaf = ctx.log.leaf_hash_at(index).map_err(error::log)?;
            resp.proofs.push(pb::EntryProof {
                index,
                leaf_hash: leaf.0.to_vec(),
                hashes: hashes.iter().map(|h| h.0.to_vec()).collect(),
            });
        }
    }
    Ok(resp)
}

/// ListClaims: checks the request's filters, waits (bounded) for the index to reach
/// `min_size` when asked, and searches the query index. Shared by the gRPC handler and the
/// search page (`crate::http::pages`).
pub(crate) async fn list_claims(
    ctx: &Ctx,
    r: pb::ListClaimsRequest,
) -> Result<pb::ListClaimsResponse, Status> {
    for (field, v, ok) in [
        ("kind", r.kind, pb::ClaimKind::try_from(r.kind).is_ok()),
        ("status", r.status, pb::Status::try_from(r.status).is_ok()),
    ] {
        if !ok {
            return Err(Status::invalid_argument(format!(
                "{field}: {v} is not a known value"
            )));
        }
    }
    if !r.claimant_id.is_empty() && !validate::is_slug(&r.claimant_id) {
        return Err(Status::invalid_argument(format!(
            "claimant_id: {} is not a source id",
            validate::quote(&r.claimant_id)
        )));
    }
    validate::timestamp("event_time_from", &r.event_time_from).map_err(error::field)?;
    validate::timestamp("event_time_to", &r.event_time_to).map_err(error::field)?;
    validate::query_text("query", &r.query).map_err(error::field)?;
    validate::query_text("place", &r.place).map_err(error::field)?;
    if r.page_token.len() > 256 {
        return Err(Status::invalid_argument("page_token: not a page token"));
    }
    if r.min_size > 0 {
        let size = ctx.log.size();
        if r.min_size > size {
            return Err(error::index(IndexError::BeyondLog {
                wanted: r.min_size,
                size,
            }));
        }
        let started = std::time::Instant::now();
        let indexed = ctx.index.wait_for(r.min_size, MIN_SIZE_WAIT).await;
        if indexed < r.min_size {
            return Err(error::index(IndexError::Behind {
                indexed,
                wanted: r.min_size,
                waited_ms: started.elapsed().as_millis(),
                failing: ctx.index.failing(),
            }));
        }
    }
    let index = ctx.index.clone();
    let answer = tokio::task::spawn_blocking(move || index.list(&r))
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    answer.map_err(error::index)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use prost::Message;
    use tonic::Code;

    use super::{list_claims, Ctx};
    use crate::index::{QueryIndex, MIN_SIZE_WAIT};
    use crate::ledger::{LedgerApply, Reader};
    use crate::log::{Log, Options};
    use crate::pb::{self, change::Kind};

    /// A `min_size` the index does not reach in time: ListClaims waits `MIN_SIZE_WAIT`, then
    /// answers UNAVAILABLE with both sizes. Once the index reads that far, the same request
    /// answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_min_size_the_index_does_not_reach_in_time_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Options::default(), Arc::new(LedgerApply)).expect("open");
        let reader = Reader::new(log.clone());
        // The indexer is not run: the index stays where it is until the test moves it.
        let (index, mut indexer) = QueryIndex::open(log.dir(), reader.clone()).expect("index");
        let closing = tokio::sync::watch::channel(false).0;
        let ctx = Ctx::over(log.clone(), reader, index, closing, None);
        let change = pb::Change {
            request_id: "r1".into(),
            request_digest: vec![0; 32],
            kind: Some(Kind::SourceRegistered(pb::Source {
                id: "wire".into(),
                name: "A wire service".into(),
                ..Default::default()
            })),
        };
        let r = log.append("test", change.encode_to_vec()).await;
        assert_eq!(r.expect("append").index, 0);
        let wanted = pb::ListClaimsRequest {
            min_size: 1,
            ..Default::default()
        };

        let started = Instant::now();
        let e = list_claims(&ctx, wanted.clone())
            .await
            .expect_err("the index is at size 0");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(
            e.message()
                .contains("has read the log to size 0, not yet to min_size 1"),
            "{}",
            e.message()
        );
        assert!(
            started.elapsed() >= MIN_SIZE_WAIT,
            "{:?}",
            started.elapsed()
        );
        // Without min_size it answers at once, from the index as it is.
        let now = list_claims(&ctx, pb::ListClaimsRequest::default()).await;
        assert_eq!(now.expect("a list").indexed_size, 0);

        assert_eq!(indexer.catch_up().expect("catch up"), 1);
        let later = list_claims(&ctx, wanted).await.expect("a list");
        assert_eq!(later.indexed_size, 1);
        log.shutdown().await.expect("shutdown");
    }
}
