//! `SourceService`: registering and grading sources, and reading them.

use tonic::{Request, Response, Status};

use super::{auth, error, request_key, Ctx};
use crate::claims::validate;
use crate::pb::{self, change::Kind, source_service_server::SourceService};

pub struct Sources(pub Ctx);

#[tonic::async_trait]
impl SourceService for Sources {
    async fn register_source(
        &self,
        req: Request<pb::RegisterSourceRequest>,
    ) -> Result<Response<pb::RegisterSourceResponse>, Status> {
        let actor = auth::principal(&req).name;
        let mut r = req.into_inner();
        if let Some(s) = r.source.as_mut() {
            s.registered_index = 0;
        }
        let source = r.source.clone().ok_or_else(|| error::missing("source"))?;
        validate::source(&source).map_err(error::field)?;
        let (request_id, digest) = request_key(&r, &r.request_id, |m| m.request_id.clear())?;
        let change = pb::Change {
            request_id,
            request_digest: digest,
            kind: Some(Kind::SourceRegistered(source.clone())),
        };
        let receipt = self.0.write(&actor, change).await?;
        let rec = self.0.reader.source(&source.id).map_err(error::ledger)?;
        Ok(Response::new(pb::RegisterSourceResponse {
            source: rec.source,
            receipt: Some(receipt),
        }))
    }

    async fn grade_source(
        &self,
        req: Request<pb::GradeSourceRequest>,
    ) -> Result<Response<pb::GradeSourceResponse>, Status> {
        let actor = auth::principal(&req).name;
        let r = req.into_inner();
        validate::grade(&r.source_id, r.reliability, &r.rationale).map_err(error::field)?;
        let (request_id, digest) = request_key(&r, &r.request_id, |m| m.request_id.clear())?;
        let change = pb::Change {
            request_id,
            request_digest: digest,
            kind: Some(Kind::SourceGraded(pb::SourceGrade {
                source_id: r.source_id.clone(),
                reliability: r.reliability,
                rationale: r.rationale.clone(),
            })),
        };
        let receipt = self.0.write(&actor, change).await?;
        let rec = self.0.reader.source(&r.source_id).map_err(error::ledger)?;
        Ok(Response::new(pb::GradeSourceResponse {
            source: rec.source,
            receipt: Some(receipt),
        }))
    }

    async fn get_source(
        &self,
        req: Request<pb::GetSourceRequest>,
    ) -> Result<Response<pb::GetSourceResponse>, Status> {
        let id = req.into_inner().id;
        if !validate::is_slug(&id) {
            return Err(match id.is_empty() {
                true => error::missing("id"),
                false => Status::invalid_argument(format!(
                    "id: {} is not a source id",
                    validate::quote(&id)
                )),
            });
        }
        Ok(Response::new(
            self.0.reader.source(&id).map_err(error::ledger)?,
        ))
    }

    async fn list_sources(
        &self,
        req: Request<pb::ListSourcesRequest>,
    ) -> Result<Response<pb::ListSourcesResponse>, Status> {
        let r = req.into_inner();
        let (sources, next_page_token) = self
            .0
            .reader
            .list_sources(r.page_size, &r.page_token)
            .map_err(error::ledger)?;
        Ok(Response::new(pb::ListSourcesResponse {
            sources,
            next_page_token,
        }))
    }
}
