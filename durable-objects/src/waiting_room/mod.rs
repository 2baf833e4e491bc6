//! The waiting room of one event: a coordinator (pure rules in [`coordinator`], driven by the
//! `QueueCoordinator` object's alarm) and several queue shards (`QueueShard`) that take the joins.
//! See `shared_types::waiting_room` for the contract the edge speaks.

pub mod coordinator;
pub mod coordinator_object;
pub mod shard;

pub use coordinator::{Coordinator, Line, SettingsError, ShardReport, Stock, SyncRequest};
pub use coordinator_object::QueueCoordinator;
pub use shard::{shard_name, EndSession, JoinRequest, Joined, PlaceRef, QueueShard, Session, SessionCheck};

use crate::inventory::{Caller, CALLER_HEADER};
use wasm_bindgen::JsValue;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Result};

/// Binding of the coordinator class (one object per event, named by the event id).
pub const COORDINATOR_BINDING: &str = "QUEUE_COORDINATOR";
/// Binding of the shard class (objects named by [`shard_name`]).
pub const SHARD_BINDING: &str = "QUEUE_SHARD";

/// Calls object `name` of `binding` as the edge (objects are reachable only inside this script).
pub async fn call(
    env: &Env,
    binding: &str,
    name: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Response> {
    call_as(env, binding, name, method, path, body, &Caller::Edge).await
}

/// Calls object `name` of `binding` on behalf of `caller`.
pub async fn call_as(
    env: &Env,
    binding: &str,
    name: &str,
    method: Method,
    path: &str,
    body: Option<String>,
    caller: &Caller,
) -> Result<Response> {
    let stub = env.durable_object(binding)?.id_from_name(name)?.get_stub()?;
    let headers = Headers::new();
    headers.set(CALLER_HEADER, &caller.header())?;
    headers.set("content-type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    if let Some(body) = body {
        init.with_body(Some(JsValue::from_str(&body)));
    }
    stub.fetch_with_request(Request::new_with_init(&format!("https://object{path}"), &init)?).await
}
