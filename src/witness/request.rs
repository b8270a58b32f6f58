//! The body of a tlog-witness `add-checkpoint` request, turned into a typed request at the edge:
//!
//! ```text
//! old <size>\n
//! <base64 hash>\n        (0 to 63 consistency proof lines)
//! \n
//! <signed checkpoint note>
//! ```
//!
//! Only the framing is checked here (every line ends in a newline, the old size is a decimal
//! without leading zeroes, each proof line is one base64 hash, at most 63 of them); the note is
//! parsed and verified by the caller, which knows the log's keys.

use tlog_tiles::Hash;

/// The most consistency proof lines a client may send (tlog-witness says a client MUST NOT
/// send more); a request with more is malformed, which also keeps the work per request small.
pub const MAX_PROOF_LINES: usize = 63;

/// A parsed `add-checkpoint` body.
#[derive(Debug, PartialEq)]
pub struct AddRequest<'a> {
    /// The size of the latest checkpoint the client believes the witness cosigned.
    pub old: u64,
    /// The consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, exactly as sent.
    pub note: &'a [u8],
}

/// Splits off one newline-terminated line (without its newline).
fn line(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = body.iter().position(|&b| b == b'\n')?;
    Some((&body[..i], &body[i + 1..]))
}

/// Parses a request body; the error says what is wrong with it.
pub fn parse(body: &[u8]) -> Result<AddRequest<'_>, String> {
    let (first, mut rest) = line(body).ok_or("the body does not start with an `old` line")?;
    let old = first
        .strip_prefix(b"old ")
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<u64>().ok().filter(|v| v.to_string() == n))
        .ok_or("the first line must be `old <size>` (decimal, no leading zeroes)")?;
    let mut proof = Vec::new();
    loop {
        let (l, r) = line(rest).ok_or("the proof lines are not followed by an empty line")?;
        rest = r;
        if l.is_empty() {
            break;
        }
        if proof.len() == MAX_PROOF_LINES {
            return Err(format!(
                "more than {MAX_PROOF_LINES} consistency proof lines"
            ));
        }
        let hash = std::str::from_utf8(l)
            .ok()
            .and_then(|s| Hash::parse_hash(s).ok())
            .ok_or_else(|| format!("proof line {} is not a base64 hash", proof.len() + 1))?;
        proof.push(hash);
    }
    if rest.is_empty() {
        return Err("the body has no checkpoint after the empty line".into());
    }
    Ok(AddRequest {
        old,
        proof,
        note: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &[u8] = b"example.com/log\n2\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\xe2\x80\x94 x AAAA\n";

    fn body(head: &str) -> Vec<u8> {
        let mut b = head.as_bytes().to_vec();
        b.extend_from_slice(NOTE);
        b
    }

    #[test]
    fn a_well_formed_body_parses() {
        let h = "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=";
        let b = body(&format!("old 20\n{h}\n{h}\n\n"));
        let r = parse(&b).expect("parses");
        assert_eq!(r.old, 20);
        assert_eq!(r.proof.len(), 2);
        assert_eq!(r.proof[0], Hash::parse_hash(h).expect("hash"));
        assert_eq!(r.note, NOTE);
        let b = body("old 0\n\n");
        assert_eq!(parse(&b).expect("parses").old, 0);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let h = "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=";
        for head in [
            "old 01\n\n",
            "old -1\n\n",
            "old 1 \n\n",
            "old  1\n\n",
            "new 1\n\n",
            "old 18446744073709551616\n\n",
            "old 1\nnot base64!\n\n",
            "old 1\nAAAA\n\n",
            "old 1\r\n\n",
        ] {
            assert!(parse(&body(head)).is_err(), "{head:?} parsed");
        }
        assert!(parse(b"old 1").is_err());
        assert!(parse(b"old 1\n").is_err());
        assert!(parse(b"old 1\n\n").is_err());
        let too_many = format!("old 1\n{}\n", format!("{h}\n").repeat(MAX_PROOF_LINES + 1));
        let err = parse(&body(&too_many)).expect_err("64 lines");
        assert!(err.contains("more than 63"), "{err}");
        let just_enough = format!("old 1\n{}\n", format!("{h}\n").repeat(MAX_PROOF_LINES));
        assert_eq!(
            parse(&body(&just_enough)).expect("63 lines").proof.len(),
            63
        );
    }
}
