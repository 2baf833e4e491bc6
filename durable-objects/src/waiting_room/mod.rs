//! The waiting room of one event: a coordinator (pure rules in [`coordinator`], driven by the
//! `QueueCoordinator` object's alarm) and several queue shards (`QueueShard`) that take the joins.
//! See `shared_types::waiting_room` for the contract the edge speaks.

pub mod coordinator;
pub mod coordinator_object;
pub mod shard;

pub use coordinator::{Coordinator, Line, SettingsError, ShardReport, Stock, SyncRequest};
pub use coordinator_object::QueueCoordinator;
pub use shard::{shard_name, EndSession, JoinRequest, Joined, PlaceRef, QueueShard, Session, SessionCheck};

pub use crate::stub::{call, COORDINATOR_BINDING, SHARD_BINDING};
