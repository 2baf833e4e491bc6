//! The edge Worker: the entry point for every buyer request. It routes, checks, and forwards; it
//! owns no state of its own (seat and queue state live in the Durable Objects it links, catalog and
//! orders in the regional core). A handler error becomes a problem+json 500, never a panic.
//!
//! - `context.rs`  the request's context ([`context::Ctx`]) and the one error type ([`context::Stop`])
//! - `web.rs`      cookies, forms, shared responses, durations
//! - `keys.rs`     the edge's keys: sign and verify its tokens
//! - `body.rs`     every body read within a bound
//! - `room/`       the waiting room (screen, credentials, the line's steps, its JSON routes)
//! - `home.rs`     `GET /`: the events, searchable;  `catalog.rs` the core's catalog, kept per isolate
//! - `pages.rs`    the buyer's pages (templates in `templates/`, scripts and styles in `assets/`);
//!   `about.rs` what an event's page says about the event
//! - `holds.rs`    holds and availability;  `seatmap.rs` the seats the buyer's map is drawn from
//! - `proxy.rs`    the buyer's routes the core answers
//! - `internal.rs` the core's signed calls;  `objects.rs` calling the event's Durable Objects
//! - `health.rs`   `GET /healthz` through every tier

mod about;
mod assets;
mod body;
mod catalog;
mod context;
mod health;
mod holds;
mod home;
mod i18n;
mod internal;
mod keys;
mod objects;
mod pages;
mod proxy;
mod room;
mod seatmap;
mod series;
mod settings;
mod waitlist;
mod web;
mod webcrypto;

// Linking the Durable Object classes here makes one script deploy the Worker and its objects.
pub use durable_objects::directory::EventDirectory;
pub use durable_objects::inventory::InventoryObject;
pub use durable_objects::waiting_room::{QueueCoordinator, QueueShard};
pub use durable_objects::waitlist::WaitlistObject;
pub use durable_objects::HealthProbe;

use durable_objects::http;
use shared_types::ids::EventId;
use shared_types::ProblemType;
use worker::{event, Context, Env, Method, Request, Response};

use context::{Ctx, Result, Stop};
use room::api;

#[event(fetch)]
async fn fetch(req: Request, env: Env, worker: Context) -> worker::Result<Response> {
    let path = req.path();
    let cx = Ctx::new(&env, &worker, &path);
    match route(&cx, req).await {
        Ok(mut resp) | Err(Stop::Answer(mut resp)) => {
            // No answer is ever sniffed into another type (a JSON body read as HTML, say). A
            // relayed answer whose headers cannot change is one the core already marked.
            let _ = resp.headers_mut().set("x-content-type-options", "nosniff");
            Ok(resp)
        }
        Err(Stop::Fault(e)) => {
            durable_objects::log::error(
                "unhandled error",
                serde_json::json!({ "path": path, "error": e.to_string() }),
            );
            let mut resp =
                http::problem_of(ProblemType::Internal, "the edge could not complete this request", &path)?;
            let _ = resp.headers_mut().set("x-content-type-options", "nosniff");
            Ok(resp)
        }
    }
}

/// The OpenAPI document of the edge's own JSON routes (docs/edge-openapi.json, the one source: the
/// API fuzzing of the test command checks the routes against it).
const OPENAPI: &str = include_str!("../../docs/edge-openapi.json");

/// `GET /api/v1/openapi.json`.
fn openapi() -> Result<Response> {
    let mut resp = Response::ok(OPENAPI)?;
    resp.headers_mut().set("content-type", "application/json")?;
    resp.headers_mut().set("cache-control", "public, max-age=300")?;
    Ok(resp)
}

/// The event a path segment names; 404 for one that cannot be an event id.
fn event_of(cx: &Ctx<'_>, segment: &str) -> Result<EventId> {
    EventId::parse(segment).map_err(|_| cx.problem(ProblemType::NotFound, "no such event"))
}

async fn route(cx: &Ctx<'_>, req: Request) -> Result<Response> {
    let segments: Vec<&str> = cx.path.trim_matches('/').split('/').collect();
    // worker-rs reads a method it does not know (QUERY, PROPFIND, …) as GET: such a request is one
    // no route takes (found by the API fuzzing).
    if req.method() == Method::Get && req.inner().method() != "GET" {
        return unrouted(cx, &segments);
    }
    match (req.method(), segments.as_slice()) {
        (Method::Get | Method::Head, [""]) => home::home(cx, &req).await,
        (Method::Get | Method::Head, ["healthz"]) => Ok(health::healthz(cx.env).await?),
        (Method::Get | Method::Head, ["api", "v1", "openapi.json"]) => openapi(),
        (Method::Get | Method::Head, ["assets", file]) => assets::serve(cx, file),
        (Method::Get | Method::Head, ["orders", order]) => pages::order_page(order),
        (Method::Get | Method::Head, ["transfers", transfer]) => pages::transfer_page(transfer),
        (Method::Get | Method::Head, ["my-tickets"]) => pages::my_tickets_page(),
        (Method::Get | Method::Head, ["series", id]) => series::series_page(cx, &req, id).await,
        (method, ["events", event, rest @ ..]) if allowed(&segments).is_some() => {
            let ev = cx.at(event_of(cx, event)?);
            // Every page of the line signs or checks tokens: without keys, 503 at once.
            cx.keys()?;
            match (method, rest) {
                (Method::Get | Method::Head, []) => pages::event_page(&ev, &req).await,
                (Method::Post, ["join"]) => pages::join_form(&ev, req).await,
                (Method::Get | Method::Head, ["buy"]) => pages::buy_page(&ev, &req).await,
                (Method::Get | Method::Head, ["offer"]) => pages::offer_page(&ev),
                (Method::Post, ["waitlist"]) => pages::waitlist_form(&ev, req).await,
                (Method::Post, ["waitlist", "leave"]) => pages::waitlist_leave_form(&ev, req).await,
                _ => unrouted(cx, &segments),
            }
        }
        (method, ["api", "v1", "events", event, rest @ ..]) if allowed(&segments).is_some() => {
            let ev = cx.at(event_of(cx, event)?);
            // The line's routes and the holds sign or check tokens: without keys, 503 at once.
            let signs = matches!(rest, ["queue" | "challenge" | "waitlist"] | ["waitlist", "offer"])
                || matches!((&method, rest), (Method::Post, ["holds"]) | (Method::Delete, ["holds", _]));
            if signs {
                cx.keys()?;
            }
            match (method, rest) {
                (Method::Post, ["challenge"]) => api::challenge(&ev, &req).await,
                (Method::Post, ["queue"]) => api::join(&ev, req).await,
                (Method::Get, ["queue"]) => api::status(&ev, &req).await,
                (Method::Delete, ["queue"]) => api::leave(&ev, &req).await,
                (Method::Get, ["availability"]) => holds::availability(&ev, &req).await,
                (Method::Get, ["seatmap"]) => seatmap::seatmap(&ev, &req).await,
                (Method::Post, ["holds"]) => holds::place(&ev, req).await,
                (Method::Delete, ["holds", hold]) => holds::release(&ev, req, hold).await,
                (Method::Post, ["waitlist"]) => waitlist::join(&ev, req).await,
                (Method::Get, ["waitlist"]) => waitlist::entry(&ev, &req).await,
                (Method::Delete, ["waitlist"]) => waitlist::leave(&ev, &req).await,
                (Method::Post, ["waitlist", "decline"]) => waitlist::decline(&ev, &req).await,
                (Method::Post, ["waitlist", "offer"]) => waitlist::take_offer(&ev, req).await,
                _ => unrouted(cx, &segments),
            }
        }
        (Method::Post, ["api", "v1", "checkout"] | ["api", "v1", "checkout", "quote"])
        | (Method::Get, ["api", "v1", "keys"])
        | (Method::Get, ["api", "v1", "orders", _])
        | (Method::Get, ["api", "v1", "orders", _, "tickets"])
        | (Method::Get, ["api", "v1", "orders", _, "tickets", _, "qr.svg" | "qr.png"])
        | (Method::Post, ["api", "v1", "orders", _, "cancel"])
        | (Method::Post, ["api", "v1", "orders", _, "tickets", _, "reissue" | "transfer"])
        | (Method::Post, ["api", "v1", "orders", _, "tickets", _, "transfer", "cancel"])
        | (Method::Get, ["api", "v1", "transfers", _])
        | (Method::Get, ["api", "v1", "transfers", _, "qr.svg" | "qr.png"])
        | (Method::Post, ["api", "v1", "transfers", _, "accept" | "decline" | "transfer"])
        | (Method::Post, ["api", "v1", "transfers", _, "transfer", "cancel"])
        | (Method::Post, ["api", "v1", "buyer", "sign-in"])
        | (Method::Get, ["api", "v1", "buyer", "orders"]) => proxy::forward(cx, req).await,
        (_, ["internal", "v1", "events", event, rest @ ..]) => {
            let ev = cx.at(event_of(cx, event)?);
            internal::handle(&ev, req, rest).await
        }
        _ => unrouted(cx, &segments),
    }
}

/// The answer to a request no route took: `405` with the path's `Allow` when some route has the
/// path, `404` otherwise.
fn unrouted(cx: &Ctx<'_>, segments: &[&str]) -> Result<Response> {
    match allowed(segments) {
        Some(allow) => web::method_not_allowed(cx, allow),
        None => Err(cx.problem(ProblemType::NotFound, "no such route")),
    }
}

/// The methods the routes of a path take (a `405`'s `Allow`), or `None` for a path no route has.
/// The one list of the public paths: keep it in step with [`route`] (a workerd test asks every path
/// with every method, and the API fuzzing asks every documented path with undocumented methods).
fn allowed(segments: &[&str]) -> Option<&'static str> {
    const READ: &str = "GET, HEAD";
    Some(match segments {
        [""] | ["healthz"] | ["api", "v1", "openapi.json"] | ["assets", _] => READ,
        ["orders", _] | ["transfers", _] | ["my-tickets"] | ["series", _] => READ,
        ["events", _] | ["events", _, "buy" | "offer"] => READ,
        ["events", _, "join" | "waitlist"] | ["events", _, "waitlist", "leave"] => "POST",
        ["api", "v1", "events", _, rest @ ..] => match rest {
            ["challenge" | "holds"] | ["waitlist", "decline" | "offer"] => "POST",
            ["queue" | "waitlist"] => "GET, POST, DELETE",
            ["availability" | "seatmap"] => "GET",
            ["holds", _] => "DELETE",
            _ => return None,
        },
        ["api", "v1", "checkout"] | ["api", "v1", "checkout", "quote"] => "POST",
        ["api", "v1", "keys"] | ["api", "v1", "buyer", "orders"] => "GET",
        ["api", "v1", "buyer", "sign-in"] => "POST",
        ["api", "v1", "orders", _, rest @ ..] => match rest {
            [] | ["tickets"] | ["tickets", _, "qr.svg" | "qr.png"] => "GET",
            ["cancel"] | ["tickets", _, "reissue" | "transfer"] | ["tickets", _, "transfer", "cancel"] => {
                "POST"
            }
            _ => return None,
        },
        ["api", "v1", "transfers", _, rest @ ..] => match rest {
            [] | ["qr.svg" | "qr.png"] => "GET",
            ["accept" | "decline" | "transfer"] | ["transfer", "cancel"] => "POST",
            _ => return None,
        },
        _ => return None,
    })
}
