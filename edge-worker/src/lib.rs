//! The edge Worker: the entry point for every buyer request. It routes, checks, and forwards; it
//! owns no state of its own (seat and queue state live in the Durable Objects it links, catalog and
//! orders in the regional core). A handler error becomes a problem+json 500, never a panic.

mod health;

// Linking the Durable Object classes here makes one script deploy the Worker and its objects.
pub use durable_objects::inventory::InventoryObject;
pub use durable_objects::HealthProbe;

use durable_objects::http;
use shared_types::ProblemType;
use worker::{event, Context, Env, Method, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let answer = route(req, &env, &path).await;
    match answer {
        Ok(resp) => Ok(resp),
        Err(e) => {
            worker::console_error!("unhandled error on {path}: {e}");
            http::problem_of(ProblemType::Internal, "the edge could not complete this request", &path)
        }
    }
}

async fn route(req: Request, env: &Env, path: &str) -> Result<Response> {
    match (req.method(), path) {
        (Method::Get | Method::Head, "/healthz") => health::healthz(env).await,
        (_, "/healthz") => http::problem_of(ProblemType::MethodNotAllowed, "use GET", path),
        _ => http::problem_of(ProblemType::NotFound, "no such route", path),
    }
}
