//! The inventory of one event (or one section shard of it): the hold ledger (pure rules) and,
//! on top of it, the Durable Object that persists it and arms its alarm.

pub mod ledger;
pub mod object;
pub mod rate;
pub mod retention;
pub mod store;

pub use crate::caller::{Caller, CALLER_HEADER, NONCE_HEADER, SHARD_INDEX_HEADER};
pub use ledger::{
    Availability, Counts, Hold, HoldError, HoldRequest, HoldState, IdempotencyRecord, Ledger, Millis, Placed,
    Releaser, Stats,
};
pub use object::{shard_of_hold, InventoryObject};
