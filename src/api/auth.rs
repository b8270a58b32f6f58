//! Who is calling. With a tokens file (`token principal` per line), a request carrying
//! `authorization: Bearer <token>` acts as that principal, and an unknown token is refused
//! with UNAUTHENTICATED; a request without the header is `anonymous`. The principal is what
//! the log records as each entry's actor.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Status};

/// The principal of a request, put into its extensions by [`Auth`].
#[derive(Debug, Clone)]
pub struct Principal(pub String);

pub const ANONYMOUS: &str = "anonymous";

/// The tonic interceptor.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Arc<HashMap<String, String>>,
}

impl Auth {
    /// Parses a tokens file: one `token principal` pair per line, `#` comments.
    pub fn from_text(text: &str) -> Result<Auth, String> {
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(t), Some(p), None) => {
                    tokens.insert(t.to_string(), p.to_string());
                }
                _ => return Err(format!("line {}: expected `token principal`", n + 1)),
            }
        }
        Ok(Auth {
            tokens: Arc::new(tokens),
        })
    }

    pub fn check(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let principal = match req.metadata().get("authorization") {
            None => ANONYMOUS.to_string(),
            Some(v) => {
                let v = v
                    .to_str()
                    .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
                let token = v
                    .strip_prefix("Bearer ")
                    .ok_or_else(|| Status::unauthenticated("expected a Bearer token"))?;
                self.tokens
                    .get(token)
                    .cloned()
                    .ok_or_else(|| Status::unauthenticated("unknown token"))?
            }
        };
        req.extensions_mut().insert(Principal(principal));
        Ok(req)
    }
}

/// The principal of a request (anonymous if no interceptor ran).
pub fn actor<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<Principal>()
        .map(|p| p.0.clone())
        .unwrap_or_else(|| ANONYMOUS.to_string())
}
