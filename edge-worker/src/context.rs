//! What every edge handler works from, and the one way it stops.
//!
//! - [`Ctx`]: one request's context: the Worker's environment and execution context, the path, and
//!   the edge's keys (read on first use, once per request; see `keys.rs`).
//! - [`EventCtx`]: the same for a route under `/events/{event}` or `/api/v1/events/{event}`.
//! - [`Stop`] and [`Result`]: a handler either answers early (a refusal or a relayed problem,
//!   already a response: [`Stop::Answer`]) or fails ([`Stop::Fault`], a problem+json 500 made by
//!   `lib.rs`). `?` works on both, so no handler returns a result inside a result.

use std::cell::OnceCell;
use std::ops::Deref;
use std::rc::Rc;

use durable_objects::http;
use shared_types::ids::EventId;
use shared_types::{Problem, ProblemType};
use worker::{Context, Env, Response};

use crate::keys::EdgeKeys;

/// Why a handler did not go on.
pub enum Stop {
    /// An answer made already: a refusal, a problem relayed from an object, a redirect.
    Answer(Response),
    /// Something failed that the caller cannot fix (a binding, a serialization): a 500.
    Fault(worker::Error),
}

/// The edge handlers' result.
pub type Result<T, E = Stop> = std::result::Result<T, E>;

impl From<worker::Error> for Stop {
    fn from(e: worker::Error) -> Self {
        Stop::Fault(e)
    }
}

impl From<serde_json::Error> for Stop {
    fn from(e: serde_json::Error) -> Self {
        Stop::Fault(e.into())
    }
}

impl Stop {
    /// The answer made by `made` (or the fault that kept it from being made).
    pub fn answer(made: worker::Result<Response>) -> Self {
        match made {
            Ok(resp) => Stop::Answer(resp),
            Err(e) => Stop::Fault(e),
        }
    }

    /// A problem+json answer.
    pub fn problem(problem: &Problem) -> Self {
        Self::answer(http::problem(problem))
    }
}

/// One request's context.
pub struct Ctx<'a> {
    pub env: &'a Env,
    pub worker: &'a Context,
    /// The request's path: the `instance` of every problem it gets.
    pub path: &'a str,
    keys: OnceCell<Rc<EdgeKeys>>,
}

impl<'a> Ctx<'a> {
    pub fn new(env: &'a Env, worker: &'a Context, path: &'a str) -> Self {
        Self { env, worker, path, keys: OnceCell::new() }
    }

    /// The edge's keys. A deployment without them answers 503 (and says why in the log, never to
    /// the client).
    pub fn keys(&self) -> Result<&EdgeKeys> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys);
        }
        match EdgeKeys::from_env(self.env) {
            Ok(keys) => Ok(self.keys.get_or_init(|| keys)),
            Err(e) => {
                durable_objects::log::error(
                    "the edge's keys are not usable",
                    serde_json::json!({ "error": e.to_string() }),
                );
                Err(self
                    .problem(ProblemType::DependencyUnavailable, "the edge is not configured to sign tokens"))
            }
        }
    }

    /// A problem of `kind` about this request, to stop with.
    pub fn problem(&self, kind: ProblemType, detail: impl Into<String>) -> Stop {
        Stop::problem(&Problem::new(kind, detail).with_instance(self.path))
    }

    /// A problem of `kind` with a stable `reason` extension, to stop with.
    pub fn refusal(&self, kind: ProblemType, reason: &str, detail: impl Into<String>) -> Stop {
        Stop::problem(
            &Problem::new(kind, detail).with_instance(self.path).with_extension("reason", reason.into()),
        )
    }

    /// The context of a route about `event`.
    pub fn at(&'a self, event: EventId) -> EventCtx<'a> {
        EventCtx { cx: self, event }
    }
}

/// The context of a route about one event.
pub struct EventCtx<'a> {
    cx: &'a Ctx<'a>,
    pub event: EventId,
}

impl<'a> Deref for EventCtx<'a> {
    type Target = Ctx<'a>;
    fn deref(&self) -> &Ctx<'a> {
        self.cx
    }
}
