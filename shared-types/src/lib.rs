//! The contract between the edge (Workers and Durable Objects) and the regional core.
//!
//! Everything here is plain data and pure functions: no I/O, no clocks, no randomness, so that it
//! compiles unchanged for the host and for `wasm32-unknown-unknown` and is tested on the host.

pub mod email;
pub mod form;
pub mod health;
pub mod idempotency;
pub mod ids;
pub mod internal_api;
pub mod inventory;
pub mod json;
pub mod money;
pub mod problem;
pub mod request_signing;
pub mod token;
pub mod traceparent;
pub mod waiting_room;

pub use health::{CoreHealth, HealthReport, HealthStatus, Tier, TierReport};
pub use problem::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};
