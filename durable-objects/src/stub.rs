//! Calling a Durable Object: the one way, used by the objects (the line's coordinator and shards
//! call each other, the coordinator reads the inventory) and by the edge Worker. Each call names
//! its caller (`x-caller`, checked by the object), and may carry the core request's nonce and the
//! shard index.

use wasm_bindgen::JsValue;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Result};

use crate::caller::{Caller, CALLER_HEADER, NONCE_HEADER, SHARD_INDEX_HEADER};

/// The bindings of wrangler.toml's `durable_objects`.
pub const INVENTORY_BINDING: &str = "INVENTORY";
pub const DIRECTORY_BINDING: &str = "DIRECTORY";
pub const COORDINATOR_BINDING: &str = "QUEUE_COORDINATOR";
pub const SHARD_BINDING: &str = "QUEUE_SHARD";
pub const WAITLIST_BINDING: &str = "WAITLIST";

/// Who is calling, and the core request's nonce and the shard's index when there are any.
pub struct Call<'a> {
    pub caller: &'a Caller,
    pub nonce: Option<&'a str>,
    pub shard_index: Option<usize>,
}

impl<'a> Call<'a> {
    /// A call by `caller` with nothing else.
    pub fn by(caller: &'a Caller) -> Self {
        Self { caller, nonce: None, shard_index: None }
    }
}

/// Sends one request to the object `name` of `binding`.
pub async fn send(
    env: &Env,
    binding: &str,
    name: &str,
    method: Method,
    path: &str,
    call: &Call<'_>,
    body: Option<String>,
) -> Result<Response> {
    let stub = env.durable_object(binding)?.id_from_name(name)?.get_stub()?;
    let headers = Headers::new();
    headers.set(CALLER_HEADER, &call.caller.header())?;
    headers.set("content-type", "application/json")?;
    if let Some(nonce) = call.nonce {
        headers.set(NONCE_HEADER, nonce)?;
    }
    if let Some(index) = call.shard_index {
        headers.set(SHARD_INDEX_HEADER, &index.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    if let Some(body) = body {
        init.with_body(Some(JsValue::from_str(&body)));
    }
    stub.fetch_with_request(Request::new_with_init(&format!("https://object{path}"), &init)?).await
}

/// [`send`] as the edge.
pub async fn call(
    env: &Env,
    binding: &str,
    name: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Response> {
    send(env, binding, name, method, path, &Call::by(&Caller::Edge), body).await
}
