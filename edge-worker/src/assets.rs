//! The buyer pages' scripts and style sheet (`edge-worker/assets/`), compiled into the Worker and
//! served at `GET /assets/{name}.{hash}.{ext}`.
//!
//! The hash (of the file's content, computed at compile time) makes each URL immutable, so browsers
//! and Cloudflare's cache keep a file for a year and a deploy changes the URL. A request naming an
//! older hash (a page rendered by the previous version during a deploy) gets today's file, not
//! cached, rather than a broken page. Pages load nothing inline, so their Content-Security-Policy
//! allows scripts and styles from this origin only (`web::html`).

use shared_types::ProblemType;
use worker::Response;

use crate::context::{Ctx, Result};

struct Asset {
    /// The file's name in `assets/`: a stem and an extension.
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: [Asset; 10] = [
    Asset { name: "shop.css", body: include_str!("../assets/shop.css"), content_type: CSS },
    Asset { name: "pow.js", body: include_str!("../assets/pow.js"), content_type: JS },
    Asset { name: "clock.js", body: include_str!("../assets/clock.js"), content_type: JS },
    Asset { name: "buy.js", body: include_str!("../assets/buy.js"), content_type: JS },
    Asset { name: "order.js", body: include_str!("../assets/order.js"), content_type: JS },
    Asset { name: "transfer.js", body: include_str!("../assets/transfer.js"), content_type: JS },
    Asset { name: "event.js", body: include_str!("../assets/event.js"), content_type: JS },
    Asset { name: "refresh.js", body: include_str!("../assets/refresh.js"), content_type: JS },
    Asset { name: "offer.js", body: include_str!("../assets/offer.js"), content_type: JS },
    Asset { name: "mine.js", body: include_str!("../assets/mine.js"), content_type: JS },
];

/// 64-bit FNV-1a: a content fingerprint for cache busting (not a security boundary).
const fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn fingerprints() -> [u64; ASSETS.len()] {
    let mut out = [0; ASSETS.len()];
    let mut i = 0;
    while i < ASSETS.len() {
        out[i] = fingerprint(ASSETS[i].body.as_bytes());
        i += 1;
    }
    out
}

const FINGERPRINTS: [u64; ASSETS.len()] = fingerprints();

fn hash_of(index: usize) -> String {
    format!("{:012x}", FINGERPRINTS[index] >> 16)
}

/// The URL of the asset `name` (`"buy.js"`), which changes whenever the file does.
///
/// # Panics
/// When `name` is not one of the assets: a template names a file that does not exist, caught by
/// the unit test below and by every page test.
pub fn url(name: &str) -> String {
    let index = ASSETS.iter().position(|a| a.name == name).unwrap_or_else(|| panic!("no asset {name}"));
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    format!("/assets/{stem}.{}.{ext}", hash_of(index))
}

/// `GET /assets/{file}`.
pub fn serve(cx: &Ctx<'_>, file: &str) -> Result<Response> {
    let mut parts = file.splitn(3, '.');
    let (Some(stem), Some(hash), Some(ext)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(cx.problem(ProblemType::NotFound, "no such file"));
    };
    let name = format!("{stem}.{ext}");
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return Err(cx.problem(ProblemType::NotFound, "no such file"));
    };
    let asset = &ASSETS[index];
    let mut resp = Response::ok(asset.body)?;
    let headers = resp.headers_mut();
    headers.set("content-type", asset.content_type)?;
    let cache = if hash == hash_of(index) { "public, max-age=31536000, immutable" } else { "no-cache" };
    headers.set("cache-control", cache)?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_url_naming_its_content() {
        for asset in &ASSETS {
            let url = url(asset.name);
            let (stem, ext) = asset.name.rsplit_once('.').unwrap();
            assert!(
                url.starts_with(&format!("/assets/{stem}.")) && url.ends_with(&format!(".{ext}")),
                "{url}"
            );
        }
        assert_ne!(url("buy.js"), url("order.js"));
    }

    #[test]
    fn the_fingerprint_changes_with_the_content() {
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
    }
}
