//! The tokens file: who holds which token, with which roles and cluster bindings.
//!
//! One line per token, `#` comments and blank lines ignored:
//!
//! ```text
//! sha256:<64 hex digits of SHA-256(token)> <principal> <role>[,<role>…] [clusters=<c>[,<c>…]]
//! ```
//!
//! Only hashes are stored, so the file does not hold usable secrets; it must still be private
//! to its owner (checked on load). A presented token is hashed and compared against every line
//! in constant time (`subtle`), so response timing says nothing about which hashes exist.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Principal, Role, Roles, ANONYMOUS};

/// The parsed tokens file.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    lines: Vec<([u8; 32], Principal)>,
}

/// The longest principal name: it is recorded in every entry the principal writes.
const MAX_PRINCIPAL: usize = 64;

/// What a principal name or a cluster may contain: printable ASCII without spaces, commas or
/// `=`, so a tokens line stays unambiguous and an actor prints safely.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PRINCIPAL
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
}

impl Tokens {
    /// Reads and parses `path`, refusing a file its group or others can read.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        crate::files::ensure_private(path, "tokens file")?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a tokens file; errors name the line.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut lines: Vec<([u8; 32], Principal)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = parse_line(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            if lines.iter().any(|(h, _)| *h == parsed.0) {
                return Err(format!("line {}: the same token hash appears twice", n + 1));
            }
            lines.push(parsed);
        }
        Ok(Tokens { lines })
    }

    /// The principal holding `token`, if any. Every line is compared, whatever matches.
    pub fn lookup(&self, token: &str) -> Option<&Principal> {
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, p) in &self.lines {
            if bool::from(hash.ct_eq(&h)) {
                found = Some(p);
            }
        }
        found
    }
}

fn parse_line(line: &str) -> Result<([u8; 32], Principal), String> {
    let mut parts = line.split_whitespace();
    let usage = "expected `sha256:<hex> <principal> <role>[,<role>…] [clusters=<c>,…]`";
    let (Some(hash), Some(name), Some(roles)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(usage.into());
    };
    let hex = hash.strip_prefix("sha256:").ok_or(
        "the first field must be `sha256:` and the token's hash (tokens are never stored)",
    )?;
    let hash = decode_hex32(hex).ok_or("the hash must be 64 hex digits")?;
    if !valid_name(name) {
        return Err(format!(
            "principal must be 1–{MAX_PRINCIPAL} printable characters without spaces, ',' or '='"
        ));
    }
    if name == ANONYMOUS {
        return Err(format!(
            "{ANONYMOUS:?} is reserved for callers without a token"
        ));
    }
    let roles = parse_roles(roles)?;
    let mut clusters = Vec::new();
    for extra in parts {
        let Some(list) = extra.strip_prefix("clusters=") else {
            return Err(format!("unexpected field; {usage}"));
        };
        if !clusters.is_empty() {
            return Err("clusters= given twice".into());
        }
        clusters = parse_clusters(list)?;
    }
    Ok((
        hash,
        Principal {
            name: name.to_string(),
            roles,
            clusters,
        },
    ))
}

/// Parses `role[,role…]`.
pub fn parse_roles(list: &str) -> Result<Roles, String> {
    let mut roles = Vec::new();
    for r in list.split(',') {
        roles.push(Role::parse(r).ok_or_else(|| {
            format!("unknown role {r:?}: the roles are registrar, submitter, reviewer, admin")
        })?);
    }
    Ok(roles.into_iter().collect())
}

/// Parses `cluster[,cluster…]`.
pub fn parse_clusters(list: &str) -> Result<Vec<String>, String> {
    let clusters: Vec<String> = list.split(',').map(str::to_string).collect();
    if clusters.iter().any(|c| !valid_name(c)) {
        return Err(
            "a cluster must be 1–64 printable characters without spaces, ',' or '='".into(),
        );
    }
    Ok(clusters)
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A fresh random token (256 bits, URL-safe base64 with a recognisable prefix).
pub fn new_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!(
        "clt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// The tokens-file line for `token`.
pub fn line_for(token: &str, p: &Principal) -> String {
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut line = format!("sha256:{hash} {} {}", p.name, p.roles);
    if !p.clusters.is_empty() {
        line.push_str(&format!(" clusters={}", p.clusters.join(",")));
    }
    line
}

/// Makes a token for `p`, appends its line to `path` (created with mode 0600 if missing, and
/// refused if readable by others) durably, and returns the token, which is shown only once.
pub fn append_new(path: &Path, p: &Principal) -> Result<String, String> {
    if !valid_name(&p.name) || p.name == ANONYMOUS {
        return Err(format!(
            "principal must be 1–{MAX_PRINCIPAL} printable characters without spaces, ',' or '=', \
             and not {ANONYMOUS:?}"
        ));
    }
    if p.roles.is_empty() {
        return Err("give at least one role (--roles)".into());
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => {
            crate::files::ensure_private(path, "tokens file")?;
            Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let token = new_token();
    let mut text = line_for(&token, p);
    text.push('\n');
    if existing
        .as_deref()
        .is_some_and(|t| !t.is_empty() && !t.ends_with('\n'))
    {
        text.insert(0, '\n');
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    if existing.is_none() {
        // A new file's name is durable only once its directory is synced.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("syncing {}: {e}", dir.display()))?;
        }
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, roles: &str, clusters: &[&str]) -> Principal {
        Principal {
            name: name.into(),
            roles: parse_roles(roles).unwrap_or_default(),
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn a_generated_line_parses_back_and_finds_its_token() {
        let alice = p("alice", "submitter,reviewer", &["ru-state", "tass"]);
        let token = new_token();
        let text = format!("# comment\n\n{}\n", line_for(&token, &alice));
        let tokens = Tokens::parse(&text).expect("parses");
        assert_eq!(tokens.lookup(&token), Some(&alice));
        assert_eq!(tokens.lookup("clt_other"), None);
        assert_eq!(tokens.lookup(""), None);
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        let h = "sha256:".to_string() + &"ab".repeat(32);
        for (text, want) in [
            (
                "plaintoken alice submitter".to_string(),
                "line 1: the first field",
            ),
            (format!("{h} alice"), "line 1: expected"),
            (format!("{h} alice writer"), "unknown role \"writer\""),
            (format!("{h} anonymous admin"), "reserved"),
            (
                format!("# x\n{h} alice admin extra"),
                "line 2: unexpected field",
            ),
            (
                format!("{h} alice admin\n{h} bob admin"),
                "line 2: the same token hash",
            ),
            ("sha256:abcd alice admin".to_string(), "64 hex digits"),
            (format!("{h} alice admin clusters="), "a cluster must be"),
        ] {
            let err = Tokens::parse(&text).expect_err(&text);
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn admin_allows_every_role() {
        let r = parse_roles("admin").unwrap_or_default();
        assert!(Role::ALL.into_iter().all(|x| r.allow(x)));
        let s = parse_roles("submitter").unwrap_or_default();
        assert!(s.allow(Role::Submitter) && !s.allow(Role::Reviewer));
    }
}
