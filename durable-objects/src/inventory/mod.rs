//! The inventory of one event (or one section shard of it): the hold ledger (pure rules) and,
//! on top of it, the Durable Object that persists it and arms its alarm.

pub mod ledger;

pub use ledger::{
    Availability, Hold, HoldError, HoldRequest, HoldState, Ledger, Millis, Placed, Releaser, Stats,
};
