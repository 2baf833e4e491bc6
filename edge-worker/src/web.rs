//! The edge's web helpers, in one place: cookies and bearer tokens, form bodies, the responses the
//! routes share (HTML with its security headers, redirects, JSON that must not be cached), random
//! ids and durations in words. HTML escaping is the templates' (askama escapes every `{{ }}`).

use durable_objects::http;
use serde::Serialize;
use shared_types::traceparent::TraceParent;
use shared_types::{Problem, ProblemType};
use worker::{Request, Response};

use crate::context::{Ctx, Result, Stop};

/// A cookie's value.
pub fn cookie(req: &Request, name: &str) -> Result<Option<String>> {
    let cookies = req.headers().get("cookie")?.unwrap_or_default();
    Ok(cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned()))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure when served over https. A `max_age_secs`
/// of 0 deletes the cookie.
pub fn set_cookie(req: &Request, name: &str, value: &str, max_age_secs: i64) -> Result<String> {
    let secure = req.url()?.scheme() == "https";
    Ok(format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    ))
}

/// The token of an `Authorization: Bearer` header, if any.
pub fn bearer(req: &Request) -> Result<Option<String>> {
    Ok(req
        .headers()
        .get("authorization")?
        .and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_owned())))
}

pub use shared_types::form::{form_body, form_fields};

/// True when the request's body is a form.
pub fn is_form(req: &Request) -> Result<bool> {
    Ok(req.headers().get("content-type")?.is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")))
}

/// True when the caller asked for JSON rather than a page.
pub fn wants_json(req: &Request) -> Result<bool> {
    let accept = req.headers().get("accept")?.unwrap_or_default();
    Ok(accept.contains("application/json") && !accept.contains("text/html"))
}

/// A JSON answer nobody caches (it is about this caller), with the cookies to set.
pub fn private_json<T: Serialize>(status: u16, body: &T, cookies: &[String]) -> Result<Response> {
    let mut resp = http::json(status, body)?;
    for c in cookies {
        resp.headers_mut().append("set-cookie", c)?;
    }
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

/// A `303 See Other` to `location`, with the cookies to set.
pub fn see_other(location: &str, cookies: &[String]) -> Result<Response> {
    let mut resp = Response::empty()?.with_status(303);
    resp.headers_mut().set("location", location)?;
    for c in cookies {
        resp.headers_mut().append("set-cookie", c)?;
    }
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

/// The Content-Security-Policy of every page: nothing runs or loads but the edge's own asset files
/// (and Turnstile's, when an event uses it), pages talk only to this origin, and no other site may
/// frame them (clickjacking on the buy and transfer pages). Pages carry no inline script or style
/// (but for one style a page may allow by its hash: [`allow`]).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
     script-src 'self' https://challenges.cloudflare.com; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-src https://challenges.cloudflare.com; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// Lets a page show images from any https origin: an event's page shows the organizer's images
/// (the core takes only http(s) URLs, the page shows only https ones). Only that page: an image
/// runs nothing, but it tells its host who looked (the referrer policy keeps the page's address
/// from it), and the pages with orders and tickets on them load nothing from elsewhere.
pub fn allow_https_images(resp: &mut Response) -> Result<()> {
    allow(resp, true, None)
}

/// [`CONTENT_SECURITY_POLICY`] with a page's additions: images from any https origin (see
/// [`allow_https_images`]), and one inline `<style>` element, allowed by its SHA-256 (CSP level 2's
/// hash source) and nothing else: an event's colour is set that way, as one custom property.
pub fn allow(resp: &mut Response, https_images: bool, inline_style: Option<&str>) -> Result<()> {
    let mut policy = CONTENT_SECURITY_POLICY.to_owned();
    if https_images {
        policy = policy.replace("img-src 'self' data:;", "img-src 'self' data: https:;");
    }
    if let Some(css) = inline_style {
        policy = policy.replace("style-src 'self';", &format!("style-src 'self' '{}';", style_hash(css)));
    }
    resp.headers_mut().set("content-security-policy", &policy)?;
    Ok(())
}

/// The CSP hash source of an inline style element's text: `sha256-<base64>`.
pub fn style_hash(css: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(css.as_bytes()))
    )
}

/// A page, with the headers every page carries, and the cookies to set.
pub fn html(status: u16, body: String, cookies: &[String]) -> Result<Response> {
    let mut resp = Response::from_html(body)?.with_status(status);
    let headers = resp.headers_mut();
    headers.set("cache-control", "no-store")?;
    headers.set("content-security-policy", CONTENT_SECURITY_POLICY)?;
    // For browsers that predate frame-ancestors.
    headers.set("x-frame-options", "DENY")?;
    headers.set("referrer-policy", "same-origin")?;
    for c in cookies {
        headers.append("set-cookie", c)?;
    }
    Ok(resp)
}

/// The answer to a route called with a method it does not take.
pub fn method_not_allowed(cx: &Ctx<'_>, allow: &str) -> Result<Response> {
    let problem = Problem::new(ProblemType::MethodNotAllowed, format!("this route takes {allow}"))
        .with_instance(cx.path);
    let mut resp = http::problem(&problem)?;
    resp.headers_mut().set("allow", allow)?;
    Err(Stop::Answer(resp))
}

/// `bytes` random bytes, in hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| worker::Error::RustError(format!("randomness: {e}")))?;
    Ok(hex::encode(buf))
}

/// `N` random bytes.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| worker::Error::RustError(format!("randomness: {e}")))?;
    Ok(buf)
}

/// The `traceparent` this edge sends to the core for a buyer's request: a new trace, sampled,
/// with this hop's span as the parent. The edge is the trust boundary (W3C Trace Context allows
/// restarting a trace there): a buyer's own `traceparent` is not continued, so that nobody outside
/// chooses the trace id the core's logs and request id carry (gluing requests into one trace,
/// copying someone's request id) or turns sampling off to hide from traces.
pub fn trace_onward() -> Result<TraceParent> {
    Ok(TraceParent::new_root(random_bytes()?))
}

/// Whole seconds from now until `at_ms` (0 once it has passed).
pub fn secs_until(at_ms: i64) -> u64 {
    ((at_ms - durable_objects::now_ms()).max(0) / 1000) as u64
}

/// "3 min 20 s", "45 s", "2 h 5 min".
pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(200), "3 min 20 s");
        assert_eq!(duration(7500), "2 h 5 min");
    }
}
