//! The tower layer that authenticates every request and applies the access table.
//!
//! It runs before routing, so a refused write never reaches a handler, let alone the log:
//! UNAUTHENTICATED for a malformed or unknown token, PERMISSION_DENIED for a missing role. An
//! accepted request carries its [`Principal`] in its extensions, where tonic hands it on to the
//! handler (`auth::principal`).

use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use tonic::Status;
use tower::{Layer, Service};

use super::{rules, Auth, Principal};

/// Layer form of [`AuthService`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Auth,
}

impl AuthLayer {
    pub fn new(auth: Auth) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            auth: self.auth.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    auth: Auth,
    inner: S,
}

/// The principal a request's headers name, or why they name none.
fn authenticate(auth: &Auth, headers: &http::HeaderMap) -> Result<Principal, Status> {
    let tokens = match auth {
        Auth::Open => return Ok(Principal::open()),
        Auth::Tokens(t) => t,
    };
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(Principal::anonymous());
    };
    let v = v
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let token = v
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated("expected `authorization: Bearer <token>`"))?;
    tokens
        .lookup(token.trim())
        .cloned()
        .ok_or_else(|| Status::unauthenticated("unknown token"))
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let decided = authenticate(&self.auth, req.headers())
            .and_then(|p| rules::check(&p, req.uri().path()).map(|()| p));
        match decided {
            Ok(p) => {
                req.extensions_mut().insert(p);
                Either::Left(self.inner.call(req))
            }
            Err(status) if !crate::http::is_grpc(req.headers()) => {
                // The HTTP surface (every path of it a read) answers in HTTP's own terms.
                let code = match status.code() {
                    tonic::Code::Unauthenticated => http::StatusCode::UNAUTHORIZED,
                    _ => http::StatusCode::FORBIDDEN,
                };
                let body = format!("{}\n", status.message());
                let mut resp = http::Response::new(tonic::body::Body::new(
                    http_body_util::Full::new(bytes::Bytes::from(body)),
                ));
                *resp.status_mut() = code;
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Either::Right(futures::future::ready(Ok(resp)))
            }
            Err(status) => Either::Right(futures::future::ready(Ok(status.into_http()))),
        }
    }
}
