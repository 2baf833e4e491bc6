//! Who calls an object: the edge establishes it and says so in a header every object checks first.

use shared_types::ids::VisitorId;

/// Header naming the authenticated caller.
pub const CALLER_HEADER: &str = "x-caller";
/// Header carrying a core request's nonce (replay refusal).
pub const NONCE_HEADER: &str = "x-core-nonce";
/// Header with which the edge tells a shard its index in the event's layout (in hold ids).
pub const SHARD_INDEX_HEADER: &str = "x-shard-index";

/// Who is calling, as the edge established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Visitor(VisitorId),
    Core,
    /// The edge Worker itself, reading public data (availability).
    Edge,
    /// The event's waiting-list object, parking and offering places at an inventory.
    Waitlist,
}

impl Caller {
    /// Reads the `x-caller` header value.
    pub fn parse(header: &str) -> Option<Self> {
        match header.split_once(' ') {
            Some(("visitor", id)) => VisitorId::parse(id).ok().map(Caller::Visitor),
            None if header == "core" => Some(Caller::Core),
            None if header == "edge" => Some(Caller::Edge),
            None if header == "waitlist" => Some(Caller::Waitlist),
            _ => None,
        }
    }

    /// The header value for this caller.
    pub fn header(&self) -> String {
        match self {
            Caller::Visitor(v) => format!("visitor {v}"),
            Caller::Core => "core".into(),
            Caller::Edge => "edge".into(),
            Caller::Waitlist => "waitlist".into(),
        }
    }
}
