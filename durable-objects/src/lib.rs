//! The Durable Object classes of the edge. Each is a thin shell: parse the request, call a pure
//! state machine (in this crate or in `shared-types`), persist to the object's SQLite storage,
//! answer. The edge Worker links this crate so that one script deploys the Worker and its objects.

pub mod directory;
pub mod health_probe;
pub mod http;
pub mod inventory;

pub use health_probe::{HealthProbe, ProbeReadBack, ProbeWrite};
