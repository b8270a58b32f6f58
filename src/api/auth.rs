//! Who is calling, and what they may write (SPEC §7).
//!
//! Every request passes through one tower layer ([`AuthLayer`]) before it reaches a service:
//! it turns the bearer token into a [`Principal`] (or `anonymous`), looks the gRPC method up in
//! one table ([`rules::access`]), and answers PERMISSION_DENIED there, before any handler runs,
//! when the principal lacks the method's role. Reads are open to every caller.
//!
//! Two rules depend on the claim a request is about, so the layer cannot decide them alone;
//! they live beside the table ([`rules::may_retract`], [`rules::may_record_verdict`]) and the
//! claim handlers call them once they have read the claimant's cluster:
//! - a principal bound to the claimant's cluster may retract without the reviewer role;
//! - a principal bound to the claimant's cluster may not record verdicts on it.
//!
//! - [`tokens`]: the tokens file (`sha256:<hex> principal roles [clusters=…]`), constant-time
//!   lookup, and making new tokens.
//! - [`rules`]: the method → role table and the cluster rules.
//! - [`layer`]: the tower layer.

pub mod layer;
pub mod rules;
pub mod tokens;

use std::fmt;
use std::sync::Arc;

pub use layer::AuthLayer;
pub use tokens::Tokens;

/// The principal of callers without a token, and of everyone in open mode.
pub use crate::ledger::ANONYMOUS;

/// A role of SPEC §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// RegisterSource, GradeSource.
    Registrar,
    /// SubmitClaim, AddEvidence.
    Submitter,
    /// RecordVerdict, RetractClaim.
    Reviewer,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Registrar,
        Role::Submitter,
        Role::Reviewer,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Registrar => "registrar",
            Role::Submitter => "submitter",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    pub const NONE: Roles = Roles(0);

    pub fn all() -> Roles {
        Role::ALL.into_iter().collect()
    }

    pub fn contains(self, r: Role) -> bool {
        self.0 & r.bit() != 0
    }

    /// Whether these roles allow what `r` allows: `admin` allows everything.
    pub fn allow(self, r: Role) -> bool {
        self.contains(r) || self.contains(Role::Admin)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        Roles(iter.into_iter().fold(0, |acc, r| acc | r.bit()))
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(Role::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Who a request acts as: the name recorded as each entry's `actor`, its roles, and the source
/// clusters it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Roles,
    pub clusters: Vec<String>,
}

impl Principal {
    /// A caller without a token when a tokens file is in force: reads only.
    pub fn anonymous() -> Principal {
        Principal {
            name: ANONYMOUS.into(),
            roles: Roles::NONE,
            clusters: Vec::new(),
        }
    }

    /// Every caller in open mode (no tokens file, loopback only): every role.
    pub fn open() -> Principal {
        Principal {
            name: ANONYMOUS.into(),
            roles: Roles::all(),
            clusters: Vec::new(),
        }
    }

    pub fn bound_to(&self, cluster: &str) -> bool {
        self.clusters.iter().any(|c| c == cluster)
    }
}

/// How callers are authenticated.
#[derive(Clone, Default)]
pub enum Auth {
    /// No tokens file: everyone is `anonymous` with every role (allowed on loopback only; the
    /// `serve` command enforces that).
    #[default]
    Open,
    /// A tokens file: a valid bearer token names a principal; no token is read-only
    /// `anonymous`; an unknown token is UNAUTHENTICATED.
    Tokens(Arc<Tokens>),
}

/// The principal of a request, as the layer put it into the request's extensions (read-only
/// `anonymous` if no layer ran, which only happens in code that builds requests by hand).
pub fn principal<T>(req: &tonic::Request<T>) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}
