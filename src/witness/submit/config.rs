//! The log's witness configuration: `--witness URL=VERIFIER_KEY` (repeatable) and
//! `--witness-quorum N`, checked before the log opens so a typo fails at once.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use crate::witness::cosignature::{CosignatureVerifier, KeyError};

/// One witness: where to submit checkpoints and the key its cosignatures must verify with.
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    /// The submission prefix, without a trailing `/`.
    url: String,
    /// `<url>/add-checkpoint`, parsed once.
    add_checkpoint: http::Uri,
    verifier: CosignatureVerifier,
}

/// Why a witness flag was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--witness {0:?}: expected URL=VERIFIER_KEY (the witness's submission URL and its cosignature verifier key)")]
    Format(String),
    #[error("--witness URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("--witness verifier key {key:?}: {source}")]
    Key {
        key: String,
        #[source]
        source: KeyError,
    },
    #[error("--witness: the key {0} is configured twice")]
    Duplicate(String),
    #[error("--witness-quorum {quorum}: must be between 1 and the number of witnesses ({count})")]
    Quorum { quorum: usize, count: usize },
    #[error("--witness-quorum needs at least one --witness")]
    QuorumWithoutWitnesses,
}

impl FromStr for WitnessConfig {
    type Err = ConfigError;

    /// Parses `URL=VERIFIER_KEY`. The split is at the first `=`: a submission prefix has no
    /// query string (the request path is appended to it), while a key name may contain `=`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (url, key) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::Format(s.to_string()))?;
        let (url, key) = (url.trim().trim_end_matches('/'), key.trim());
        if url.is_empty() || key.is_empty() {
            return Err(ConfigError::Format(s.to_string()));
        }
        let bad = |why: &str| ConfigError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let parsed: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match parsed.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https witnesses are not supported yet: reach the witness over http:// \
                     (for example through a local TLS-terminating proxy)",
                ))
            }
            _ => return Err(bad("must start with http://")),
        }
        if parsed.host().is_none() {
            return Err(bad("has no host"));
        }
        if parsed.query().is_some() {
            return Err(bad("a submission prefix has no query string"));
        }
        let add_checkpoint = format!("{url}/add-checkpoint")
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let verifier = CosignatureVerifier::new(key).map_err(|source| ConfigError::Key {
            key: key.to_string(),
            source,
        })?;
        Ok(WitnessConfig {
            url: url.to_string(),
            add_checkpoint,
            verifier,
        })
    }
}

impl WitnessConfig {
    /// The submission prefix.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `add-checkpoint` endpoint.
    pub fn add_checkpoint_uri(&self) -> &http::Uri {
        &self.add_checkpoint
    }

    /// The verifier of this witness's cosignatures.
    pub fn verifier(&self) -> &CosignatureVerifier {
        &self.verifier
    }
}

impl fmt::Display for WitnessConfig {
    /// `witness NAME (URL)`: how errors and logs name a witness, so an operator can find it
    /// in the configuration by either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "witness {} ({})", self.verifier.name(), self.url)
    }
}

/// The witnesses of a log and how many of them must cosign a checkpoint before it is served
/// as cosigned.
#[derive(Clone, Debug)]
pub struct Witnessing {
    witnesses: Vec<WitnessConfig>,
    quorum: usize,
}

impl Witnessing {
    /// Checks the set: no key twice, and a quorum between 1 and the count (default: all).
    /// `None` when there are no witnesses (and no quorum was asked for).
    pub fn new(
        witnesses: Vec<WitnessConfig>,
        quorum: Option<usize>,
    ) -> Result<Option<Witnessing>, ConfigError> {
        if witnesses.is_empty() {
            return match quorum {
                Some(_) => Err(ConfigError::QuorumWithoutWitnesses),
                None => Ok(None),
            };
        }
        let mut seen = HashSet::new();
        for w in &witnesses {
            // Two entries with one key would let one witness count twice toward the quorum.
            if !seen.insert(w.verifier.verifier_key()) {
                return Err(ConfigError::Duplicate(w.verifier.verifier_key()));
            }
        }
        let count = witnesses.len();
        let quorum = quorum.unwrap_or(count);
        if quorum == 0 || quorum > count {
            return Err(ConfigError::Quorum { quorum, count });
        }
        Ok(Some(Witnessing { witnesses, quorum }))
    }

    pub fn witnesses(&self) -> &[WitnessConfig] {
        &self.witnesses
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The witnesses' verifiers, in configuration order.
    pub fn verifiers(&self) -> Vec<CosignatureVerifier> {
        self.witnesses.iter().map(|w| w.verifier.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vkey(name: &str, seed: u8) -> String {
        let k = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        crate::witness::cosignature::verifier_key(name, &k.verifying_key())
    }

    #[test]
    fn parses_url_and_key() {
        let w: WitnessConfig = format!("http://127.0.0.1:7380/=  {}", vkey("w1.example", 1))
            .parse()
            .expect("parses");
        assert_eq!(w.url(), "http://127.0.0.1:7380");
        assert_eq!(
            w.add_checkpoint_uri().to_string(),
            "http://127.0.0.1:7380/add-checkpoint"
        );
        assert_eq!(w.to_string(), "witness w1.example (http://127.0.0.1:7380)");
    }

    #[test]
    fn refuses_bad_flags_with_the_reason() {
        let k = vkey("w1.example", 1);
        let err = |s: String| s.parse::<WitnessConfig>().expect_err("refused").to_string();
        assert!(err("http://x".into()).contains("expected URL=VERIFIER_KEY"));
        assert!(err(format!("https://x={k}")).contains("https witnesses are not supported"));
        assert!(err(format!("ftp://x={k}")).contains("must start with http://"));
        assert!(err(format!("http://x?a=b={k}")).contains("query"));
        assert!(err("http://x=w1+00000000+AAAA".into()).contains("verifier key"));
        // A log key (type 0x01) is not a witness key.
        let log_key = signed_note::new_ed25519_verifier_key(
            "w1.example",
            &ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key(),
        );
        assert!(err(format!("http://x={log_key}")).contains("not an Ed25519 cosignature/v1 key"));
    }

    #[test]
    fn quorum_is_between_one_and_the_count_and_keys_are_unique() {
        let a: WitnessConfig = format!("http://a={}", vkey("a", 1)).parse().expect("a");
        let b: WitnessConfig = format!("http://b={}", vkey("b", 2)).parse().expect("b");
        let set = Witnessing::new(vec![a.clone(), b.clone()], None)
            .expect("ok")
            .expect("some");
        assert_eq!(set.quorum(), 2);
        assert!(Witnessing::new(vec![a.clone(), b.clone()], Some(3)).is_err());
        assert!(Witnessing::new(vec![a.clone(), b.clone()], Some(0)).is_err());
        assert!(Witnessing::new(vec![a.clone(), a.clone()], Some(1)).is_err());
        assert!(Witnessing::new(vec![], Some(1)).is_err());
        assert!(Witnessing::new(vec![], None).expect("ok").is_none());
    }
}
