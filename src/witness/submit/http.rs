//! The `add-checkpoint` call of C2SP `tlog-witness`, as the log makes it: the request body, one
//! keep-alive HTTP/1 client for every witness, a deadline per request, and the answer sorted
//! into what the submitter acts on.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tlog_tiles::Hash;

/// The most a witness's answer may hold: a few signature lines or a size fit many times over.
const MAX_ANSWER: usize = 64 * 1024;

/// The `add-checkpoint` request body: `old N`, the consistency proof (one base64 hash a line),
/// an empty line, then the signed checkpoint.
pub fn request_body(old: u64, proof: &[Hash], checkpoint_note: &str) -> Vec<u8> {
    use base64::Engine;
    let mut body = format!("old {old}\n");
    for h in proof {
        body.push_str(&base64::engine::general_purpose::STANDARD.encode(h.0));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(checkpoint_note);
    body.into_bytes()
}

/// What a witness answered.
#[derive(Debug)]
pub enum Answer {
    /// 200: the body, which should be cosignature lines.
    Cosigned(Bytes),
    /// 409: the size of the latest checkpoint the witness cosigned for this log, when the body
    /// says it (`text/x.tlog.size`). The spec requires it when the old size is wrong; a 409
    /// for another root at the same size may instead carry an explanation, kept here.
    Conflict(Result<u64, String>),
    /// 422: the consistency proof does not verify against what the witness holds.
    Inconsistent,
    /// Any other status, with the start of the body (the witness's explanation).
    Refused(StatusCode, String),
}

/// One client for all witnesses: connections are kept alive between rounds (the spec asks
/// logs to, and a round is one request per witness).
#[derive(Clone)]
pub struct WitnessClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl WitnessClient {
    /// A client whose requests (connect, send, read the whole answer) each end within
    /// `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // Below the witness's own idle limit (10 s for `claimledger witness`), so a round
            // after a quiet spell does not pick a connection the witness is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        WitnessClient { client, timeout }
    }

    /// POSTs one `add-checkpoint` request. An `Err` is a transport failure (refused
    /// connection, timeout, an answer that is not HTTP or too large), never a witness's
    /// verdict on the checkpoint.
    pub async fn add_checkpoint(&self, uri: &http::Uri, body: Vec<u8>) -> Result<Answer, String> {
        match tokio::time::timeout(self.timeout, self.send(uri, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn send(&self, uri: &http::Uri, body: Vec<u8>) -> Result<Answer, String> {
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| {
            // hyper's top-level error says only "client error (Connect)"; the cause says why.
            match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        })?;
        let status = resp.status();
        let size_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().starts_with("text/x.tlog.size"));
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(match status {
            StatusCode::OK => Answer::Cosigned(body),
            StatusCode::CONFLICT => {
                let text = String::from_utf8_lossy(&body);
                match text.strip_suffix('\n').map(str::parse::<u64>) {
                    Some(Ok(n)) if size_type => Answer::Conflict(Ok(n)),
                    _ => Answer::Conflict(Err(snippet(&text))),
                }
            }
            StatusCode::UNPROCESSABLE_ENTITY => Answer::Inconsistent,
            _ => Answer::Refused(status, snippet(&String::from_utf8_lossy(&body))),
        })
    }
}

/// The first line of a witness's error text, short enough for a log line.
fn snippet(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_is_old_size_proof_blank_line_checkpoint() {
        let body = request_body(
            20,
            &[Hash([0; 32]), Hash([0xff; 32])],
            "o\n30\nAAAA\n\n— o sig\n",
        );
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            "old 20\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\
             //////////////////////////////////////////8=\n\no\n30\nAAAA\n\n— o sig\n"
        );
        assert_eq!(request_body(0, &[], "c\n"), b"old 0\n\nc\n");
    }
}
