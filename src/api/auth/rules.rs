//! What each gRPC method requires: the one table of method → role, and the two rules that
//! depend on the claim's claimant cluster.

use tonic::Status;

use super::{Principal, Role};

/// What a method requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, including `anonymous`: every read.
    Open,
    /// A principal whose roles allow this one.
    Role(Role),
    /// RetractClaim: a reviewer, or a principal bound to some cluster (whether it is the
    /// claimant's is checked by the handler with [`may_retract`]).
    ReviewerOrBound,
}

/// The access table, keyed by gRPC path. A method of ours missing from it needs `admin`, so a
/// new write can never be open by omission.
pub fn access(path: &str) -> Access {
    let Some(method) = path.strip_prefix("/claimledger.v1.") else {
        // Health and reflection.
        return Access::Open;
    };
    match method {
        "SourceService/RegisterSource" | "SourceService/GradeSource" => {
            Access::Role(Role::Registrar)
        }
        "ClaimService/SubmitClaim" | "ClaimService/AddEvidence" => Access::Role(Role::Submitter),
        "ClaimService/RecordVerdict" => Access::Role(Role::Reviewer),
        "ClaimService/RetractClaim" => Access::ReviewerOrBound,
        "SourceService/GetSource"
        | "SourceService/ListSources"
        | "ClaimService/GetClaim"
        | "ClaimService/GetClaimStatus"
        | "ClaimService/ListClaims"
        | "LogService/GetCheckpoint"
        | "LogService/GetEntries"
        | "LogService/GetInclusionProof"
        | "LogService/GetConsistencyProof"
        | "LogService/WatchEntries"
        | "LogService/VerifyLog" => Access::Open,
        _ => Access::Role(Role::Admin),
    }
}

/// Whether `p` may call the method at `path`, as far as that can be told before the request is
/// read; the refusal says which role is missing.
pub fn check(p: &Principal, path: &str) -> Result<(), Status> {
    let method = path.rsplit('/').next().unwrap_or(path);
    let ok = match access(path) {
        Access::Open => true,
        Access::Role(r) => p.roles.allow(r),
        Access::ReviewerOrBound => p.roles.allow(Role::Reviewer) || !p.clusters.is_empty(),
    };
    if ok {
        return Ok(());
    }
    let needs = match access(path) {
        Access::Role(r) => format!("the {r} role"),
        _ => "the reviewer role, or a binding to the claimant's cluster".to_string(),
    };
    Err(Status::permission_denied(format!(
        "{} (roles: {}) may not call {method}: it needs {needs}",
        p.name, p.roles
    )))
}

/// A retraction: by a reviewer, or by a principal bound to the claimant's cluster.
pub fn may_retract(p: &Principal, claimant_cluster: &str) -> Result<(), Status> {
    if p.roles.allow(Role::Reviewer) || p.bound_to(claimant_cluster) {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "{} may not retract this claim: only a reviewer or a principal bound to the \
         claimant's cluster ({claimant_cluster}) may",
        p.name
    )))
}

/// A verdict: never by a principal bound to the claimant's cluster (conflict of interest).
pub fn may_record_verdict(p: &Principal, claimant_cluster: &str) -> Result<(), Status> {
    if p.bound_to(claimant_cluster) {
        return Err(Status::permission_denied(format!(
            "{} is bound to the claimant's cluster ({claimant_cluster}) and may not record a \
             verdict on its claim (conflict of interest); another reviewer must",
            p.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::Roles;

    #[test]
    fn unknown_methods_of_ours_need_admin_and_others_are_open() {
        assert_eq!(
            access("/claimledger.v1.ClaimService/DeleteEverything"),
            Access::Role(Role::Admin)
        );
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            access("/claimledger.v1.LogService/GetEntries"),
            Access::Open
        );
    }

    #[test]
    fn a_bound_reviewer_cannot_judge_its_own_cluster() {
        let p = Principal {
            name: "ed".into(),
            roles: [Role::Reviewer].into_iter().collect::<Roles>(),
            clusters: vec!["ru-state".into()],
        };
        assert!(may_record_verdict(&p, "ru-state").is_err());
        assert!(may_record_verdict(&p, "ua-state").is_ok());
        assert!(may_retract(&p, "ua-state").is_ok());
    }
}
