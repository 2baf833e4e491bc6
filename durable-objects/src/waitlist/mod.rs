//! An event's waiting list: when the event is sold out, visitors queue for the places that come
//! back, and are offered them in order (docs/waiting-list.md). The rules are pure ([`list`]).

pub mod ids;
pub mod list;
pub mod object;

pub use object::WaitlistObject;
