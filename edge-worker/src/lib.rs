//! The edge Worker: the entry point for every buyer request. It routes, checks, and forwards; it
//! owns no state of its own (seat and queue state live in the Durable Objects it links, catalog and
//! orders in the regional core). A handler error becomes a problem+json 500, never a panic.

mod body;
mod health;
mod holds;
mod internal;
mod keys;
mod objects;
mod pages;
mod proxy;
mod queue;

// Linking the Durable Object classes here makes one script deploy the Worker and its objects.
pub use durable_objects::directory::EventDirectory;
pub use durable_objects::inventory::InventoryObject;
pub use durable_objects::waiting_room::{QueueCoordinator, QueueShard};
pub use durable_objects::HealthProbe;

use durable_objects::http;
use shared_types::ids::EventId;
use shared_types::ProblemType;
use worker::{event, Context, Env, Method, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let path = req.path();
    let answer = route(req, &env, &ctx, &path).await;
    match answer {
        Ok(mut resp) => {
            // No answer is ever sniffed into another type (a JSON body read as HTML, say). A
            // relayed answer whose headers cannot change is one the core already marked.
            let _ = resp.headers_mut().set("x-content-type-options", "nosniff");
            Ok(resp)
        }
        Err(e) => {
            worker::console_error!("unhandled error on {path}: {e}");
            http::problem_of(ProblemType::Internal, "the edge could not complete this request", &path)
        }
    }
}

async fn route(req: Request, env: &Env, ctx: &Context, path: &str) -> Result<Response> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get | Method::Head, ["healthz"]) => health::healthz(env).await,
        (_, ["healthz"]) => http::problem_of(ProblemType::MethodNotAllowed, "use GET", path),
        (Method::Get | Method::Head, ["orders", order]) => pages::order_page(order),
        (Method::Get | Method::Head, ["transfers", transfer]) => pages::transfer_page(transfer),
        (method, ["events", event, rest @ ..]) => {
            let Ok(event) = EventId::parse(event) else {
                return http::problem_of(ProblemType::NotFound, "no such event", path);
            };
            let keys = match edge_keys(env, path)? {
                Ok(keys) => keys,
                Err(resp) => return Ok(resp),
            };
            let room = queue::Room { env, ctx, keys: &keys, event: &event, path };
            match (method, rest) {
                (Method::Get | Method::Head, []) => pages::event_page(&room, &req).await,
                (Method::Post, ["join"]) => pages::join_form(&room, req).await,
                (Method::Get | Method::Head, ["buy"]) => pages::buy_page(&room, &req).await,
                (_, [] | ["join"] | ["buy"]) => queue::method_not_allowed(path),
                _ => http::problem_of(ProblemType::NotFound, "no such page", path),
            }
        }
        (method, ["api", "v1", "events", event, rest @ ..]) => {
            let Ok(event) = EventId::parse(event) else {
                return http::problem_of(ProblemType::NotFound, "no such event", path);
            };
            if let ["queue" | "challenge"] = rest {
                let keys = match edge_keys(env, path)? {
                    Ok(keys) => keys,
                    Err(resp) => return Ok(resp),
                };
                let room = queue::Room { env, ctx, keys: &keys, event: &event, path };
                return match (method, rest) {
                    (Method::Post, ["challenge"]) => queue::challenge(&room, &req).await,
                    (Method::Post, ["queue"]) => queue::join_api(&room, req).await,
                    (Method::Get, ["queue"]) => queue::status(&room, &req).await,
                    (Method::Delete, ["queue"]) => queue::leave(&room, &req).await,
                    _ => queue::method_not_allowed(path),
                };
            }
            match (method, rest) {
                (Method::Get, ["availability"]) => holds::availability(env, &event, path).await,
                (Method::Post, ["holds"]) => match edge_keys(env, path)? {
                    Ok(keys) => holds::place(req, env, &keys, &event, path).await,
                    Err(resp) => Ok(resp),
                },
                (Method::Delete, ["holds", hold]) => match edge_keys(env, path)? {
                    Ok(keys) => holds::release(req, env, &keys, &event, hold, path).await,
                    Err(resp) => Ok(resp),
                },
                (_, ["availability"] | ["holds"] | ["holds", _]) => http::problem_of(
                    ProblemType::MethodNotAllowed,
                    "this route does not accept that method",
                    path,
                ),
                _ => http::problem_of(ProblemType::NotFound, "no such route", path),
            }
        }
        (Method::Post, ["api", "v1", "checkout"])
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
        | (Method::Post, ["api", "v1", "transfers", _, "transfer", "cancel"]) => {
            match edge_keys(env, path)? {
                Ok(keys) => proxy::forward(req, env, &keys, path).await,
                Err(resp) => Ok(resp),
            }
        }
        (_, ["api", "v1", "checkout"] | ["api", "v1", "orders" | "transfers", ..]) => {
            http::problem_of(ProblemType::MethodNotAllowed, "this route does not accept that method", path)
        }
        (_, ["internal", "v1", "events", event, rest @ ..]) => {
            let Ok(event) = EventId::parse(event) else {
                return http::problem_of(ProblemType::NotFound, "no such event", path);
            };
            match edge_keys(env, path)? {
                Ok(keys) => internal::handle(req, env, &keys, &event, rest, path).await,
                Err(resp) => Ok(resp),
            }
        }
        _ => http::problem_of(ProblemType::NotFound, "no such route", path),
    }
}

/// The edge's keys; a deployment without them answers 503 (and says why in the log, not to the client).
fn edge_keys(env: &Env, path: &str) -> Result<std::result::Result<std::rc::Rc<keys::EdgeKeys>, Response>> {
    match keys::EdgeKeys::from_env(env) {
        Ok(keys) => Ok(Ok(keys)),
        Err(e) => {
            worker::console_error!("edge keys: {e}");
            http::problem_of(
                ProblemType::DependencyUnavailable,
                "the edge is not configured to sign tokens",
                path,
            )
            .map(Err)
        }
    }
}
