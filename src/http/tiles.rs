//! The C2SP tlog-tiles read endpoints (<https://c2sp.org/tlog-tiles>), so standard tile clients
//! and monitors can read and check the log without gRPC:
//!
//! - `/checkpoint`: the latest signed checkpoint (the log's own signature; the cosigned one,
//!   when the log has witnesses, is GetCheckpoint's `cosigned_note`). Never cached.
//! - `/tile/<L>/<N>[.p/<W>]`: the hashes of level `L` tile `N`, 256 of them (32 bytes each)
//!   or the first `W` for a partial tile. `N` is written three digits a part, `x001/x234/067`.
//! - `/tile/entries/<N>[.p/<W>]`: the entry bundle of leaves `256N ..`, each entry as a
//!   16-bit big-endian length and the exact bytes that were hashed (so an entry holds at most
//!   65,535 bytes: [`crate::log::MAX_ENTRY`]).
//!
//! A tile exists once the published tree holds everything in it; before that the answer is
//! 404, as the spec has clients expect. A full tile never changes, so it is served
//! `immutable`; a partial tile at a given width never changes either, but the spec lets logs
//! drop partial tiles once the full one exists, so it is cached only briefly. Every tree size
//! has a checkpoint (GetCheckpoint signs any earlier size on request), so partial tiles are
//! served at every width up to the tree's.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tlog_tiles::Tile;

use super::text;
use crate::api::Ctx;

/// Tile height: 2^8 = 256 hashes or entries per full tile, as the spec fixes it.
const HEIGHT: u8 = 8;

pub(crate) fn routes() -> axum::Router<Ctx> {
    axum::Router::new()
        .route("/checkpoint", get(checkpoint))
        .route("/tile/{*path}", get(tile))
}

async fn checkpoint(State(ctx): State<Ctx>) -> Response {
    match ctx.log.latest_checkpoint() {
        Ok(cp) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            cp.note,
        )
            .into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the checkpoint: {e}\n"),
        ),
    }
}

/// Parses the part of a tile path after `/tile/` into a tile of height 8, or says why not. Only
/// the canonical spelling is accepted (`x001/067`, never `1067` or `x001/67`), so every tile
/// has one URL and caches see it once.
pub fn parse(path: &str) -> Result<Tile, String> {
    let bad = || {
        format!(
            "not a tile path: /tile/{path} (expected /tile/<L>/<N>[.p/<W>] or \
             /tile/entries/<N>[.p/<W>]: L from 0 to 63, N in groups of three digits like \
             x001/x234/067, W from 1 to 255)"
        )
    };
    let (level, rest) = path.split_once('/').ok_or_else(bad)?;
    let (is_data, level) = match level {
        "entries" => (true, 0),
        l => (false, l.parse::<u8>().map_err(|_| bad())?),
    };
    let (n_path, width) = match rest.split_once(".p/") {
        Some((n, w)) => (n, w.parse::<u32>().map_err(|_| bad())?),
        None => (rest, 1 << HEIGHT),
    };
    let mut n: u64 = 0;
    for part in n_path.split('/') {
        let digits = part.strip_prefix('x').unwrap_or(part);
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let d: u64 = digits.parse().map_err(|_| bad())?;
        n = n
            .checked_mul(1000)
            .and_then(|n| n.checked_add(d))
            .ok_or_else(bad)?;
    }
    if level >= 64 || width == 0 || width > 1 << HEIGHT {
        return Err(bad());
    }
    // Within the ranges `Tile::new` asserts, so it cannot panic.
    let tile = Tile::new(HEIGHT, level, n, width, is_data);
    if canonical(&tile) != path {
        return Err(bad());
    }
    Ok(tile)
}

/// A tile's path after `/tile/`, as C2SP spells it.
fn canonical(tile: &Tile) -> String {
    let mut n = tile.level_index();
    let mut path = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        path = format!("x{:03}/{path}", n % 1000);
    }
    let level = if tile.is_data() {
        "entries".to_string()
    } else {
        tile.level().to_string()
    };
    if tile.width() == 1 << HEIGHT {
        format!("{level}/{path}")
    } else {
        format!("{level}/{path}.p/{}", tile.width())
    }
}

async fn tile(State(ctx): State<Ctx>, Path(path): Path<String>) -> Response {
    let tile = match parse(&path) {
        Ok(t) => t,
        Err(why) => return text(StatusCode::BAD_REQUEST, why + "\n"),
    };
    let log = ctx.log.clone();
    // Reading a tile is up to 256 sled reads: off the async workers.
    let read = tokio::task::spawn_blocking(move || log.tile(&tile)).await;
    match read {
        Ok(Ok(Some(data))) => {
            let cache = if tile.width() == 1 << HEIGHT {
                "public, max-age=31536000, immutable"
            } else {
                "public, max-age=60"
            };
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CACHE_CONTROL, cache),
                ],
                data,
            )
                .into_response()
        }
        Ok(Ok(None)) => text(
            StatusCode::NOT_FOUND,
            format!(
                "/tile/{path} is beyond the published tree of {} entries\n",
                ctx.log.size()
            ),
        ),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading /tile/{path}: {e}\n"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading /tile/{path}: {e}\n"),
        ),
    }
}
