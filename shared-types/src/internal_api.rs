//! The edge's internal API: the routes the core (and the load generator) call, signed with the
//! core's key (see [`crate::request_signing`]), and the answers they read. Both sides build and
//! match routes through [`InternalRoute`], so a path is written once.
//!
//! | route | method | path under `/internal/v1/events/{event}` |
//! |---|---|---|
//! | [`InternalRoute::PutInventory`] | PUT | `/inventory` |
//! | [`InternalRoute::Stats`] | GET | `/stats` |
//! | [`InternalRoute::Layout`] | GET | `/layout` |
//! | [`InternalRoute::PutWaitingRoom`] | PUT | `/waiting-room` |
//! | [`InternalRoute::WaitingRoom`] | GET | `/waiting-room` |
//! | [`InternalRoute::EndSession`] | POST | `/waiting-room/sessions/end` |
//! | [`InternalRoute::Waitlist`] | GET | `/waitlist` |
//! | [`InternalRoute::WaitlistRecords`] | GET | `/waitlist/records` |
//! | [`InternalRoute::WaitlistEntries`] | GET | `/waitlist/entries` |
//! | [`InternalRoute::WaitlistOffers`] | GET | `/waitlist/offers?after={seq}` |
//! | [`InternalRoute::CloseWaitlist`] | POST | `/waitlist/close` |
//! | [`InternalRoute::ForgetWaitlistAddress`] | POST | `/waitlist/forget` |
//! | [`InternalRoute::PlaceHold`] | POST | `/holds` (the box office's: [`CoreHoldBody`]) |
//! | [`InternalRoute::Hold`] | GET | `/holds/{hold}` |
//! | [`InternalRoute::HoldAction`] | POST | `/holds/{hold}/{extend,confirm,reclaim,release,return}` |

use serde::{Deserialize, Serialize};

use crate::inventory::HoldState;

/// The body of a hold's `confirm` or `reclaim` from the core. `end_session_of` names the buyer
/// whose shopping session ends with the sale (closed-loop admission): the edge ends it in the same
/// call, once the sale is made, rather than in a call of its own. An empty body (an older core)
/// ends nothing; fields a later core adds are ignored (a side effect never blocks a sale). Deploy
/// the edge first: an older edge sells but ends no session (it ends when its time is up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_of: Option<crate::ids::VisitorId>,
}

/// What every visitor id of a box-office hold starts with: the inventory places a hold for the
/// core only under such an id, and the core sells a box-office hold only under one.
pub const BOX_OFFICE_VISITOR_PREFIX: &str = "box-office_";

/// The body of [`InternalRoute::PlaceHold`]: a hold the box office places for a walk-up buyer,
/// without the line (docs/box-office.md). `request` is a buyer's hold request as the inventory
/// reads it (`{"kind": "seats" | "best_available" | "general_admission", …}`); `visitor` starts
/// with [`BOX_OFFICE_VISITOR_PREFIX`]; `idempotency_key` makes a retry answer the same hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreHoldBody {
    pub visitor: crate::ids::VisitorId,
    pub request: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Where every internal route starts.
pub const PREFIX: &str = "/internal/v1/events/";

/// What the core may do to a hold at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldAction {
    /// Once, for checkout: the hold lives on for payment.
    Extend,
    /// Sell it.
    Confirm,
    /// Sell the seats of an expired or released hold when they are still free.
    Reclaim,
    /// Give its seats back before expiry.
    Release,
    /// Give the seats of a sold hold back (a refund).
    Return,
}

impl HoldAction {
    pub const ALL: [HoldAction; 5] = [
        HoldAction::Extend,
        HoldAction::Confirm,
        HoldAction::Reclaim,
        HoldAction::Release,
        HoldAction::Return,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldAction::Extend => "extend",
            HoldAction::Confirm => "confirm",
            HoldAction::Reclaim => "reclaim",
            HoldAction::Release => "release",
            HoldAction::Return => "return",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One route of the internal API, for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InternalRoute {
    PutInventory,
    Stats,
    /// What the edge holds of the event (its shards and inventory version); 404 with the reason
    /// `unpublished` when it holds nothing: the core re-pushes an event the edge lost.
    Layout,
    PutWaitingRoom,
    WaitingRoom,
    EndSession,
    /// The waiting list's counts (docs/waiting-list.md).
    Waitlist,
    /// The waiting list's history (every decision, for the audit and the export).
    WaitlistRecords,
    /// Every entry of the waiting list, with its address (the organizer's export).
    WaitlistEntries,
    /// The offers made since a point of the list's history, with their signed links' tokens, for
    /// the core to mail (`?after=` the last position read).
    WaitlistOffers,
    /// The organizer closes the waiting list.
    CloseWaitlist,
    /// An erasure request: the live entries of an address leave the list, and their address is
    /// deleted (body `{"email"}`; answers `{"forgotten": n}`).
    ForgetWaitlistAddress,
    /// A box-office hold ([`CoreHoldBody`]): answers the inventory's `{"hold", "replayed"}`.
    PlaceHold,
    Hold(String),
    HoldAction(String, HoldAction),
}

impl InternalRoute {
    /// The HTTP method, upper case.
    pub fn method(&self) -> &'static str {
        match self {
            InternalRoute::PutInventory | InternalRoute::PutWaitingRoom => "PUT",
            InternalRoute::Stats
            | InternalRoute::Layout
            | InternalRoute::WaitingRoom
            | InternalRoute::Waitlist
            | InternalRoute::WaitlistRecords
            | InternalRoute::WaitlistOffers
            | InternalRoute::WaitlistEntries
            | InternalRoute::Hold(_) => "GET",
            InternalRoute::EndSession
            | InternalRoute::CloseWaitlist
            | InternalRoute::ForgetWaitlistAddress
            | InternalRoute::PlaceHold
            | InternalRoute::HoldAction(..) => "POST",
        }
    }

    /// The path for `event`.
    pub fn path(&self, event: &str) -> String {
        let rest = match self {
            InternalRoute::PutInventory => "inventory".to_owned(),
            InternalRoute::Stats => "stats".to_owned(),
            InternalRoute::Layout => "layout".to_owned(),
            InternalRoute::PutWaitingRoom | InternalRoute::WaitingRoom => "waiting-room".to_owned(),
            InternalRoute::EndSession => "waiting-room/sessions/end".to_owned(),
            InternalRoute::Waitlist => "waitlist".to_owned(),
            InternalRoute::WaitlistRecords => "waitlist/records".to_owned(),
            InternalRoute::WaitlistOffers => "waitlist/offers".to_owned(),
            InternalRoute::WaitlistEntries => "waitlist/entries".to_owned(),
            InternalRoute::CloseWaitlist => "waitlist/close".to_owned(),
            InternalRoute::ForgetWaitlistAddress => "waitlist/forget".to_owned(),
            InternalRoute::PlaceHold => "holds".to_owned(),
            InternalRoute::Hold(hold) => format!("holds/{hold}"),
            InternalRoute::HoldAction(hold, action) => format!("holds/{hold}/{}", action.as_str()),
        };
        format!("{PREFIX}{event}/{rest}")
    }

    /// The route a request names: its method (upper case) and the path's segments after the
    /// event's. `None` for anything else.
    pub fn parse(method: &str, rest: &[&str]) -> Option<Self> {
        Some(match (method, rest) {
            ("PUT", ["inventory"]) => InternalRoute::PutInventory,
            ("GET", ["stats"]) => InternalRoute::Stats,
            ("GET", ["layout"]) => InternalRoute::Layout,
            ("PUT", ["waiting-room"]) => InternalRoute::PutWaitingRoom,
            ("GET", ["waiting-room"]) => InternalRoute::WaitingRoom,
            ("POST", ["waiting-room", "sessions", "end"]) => InternalRoute::EndSession,
            ("GET", ["waitlist"]) => InternalRoute::Waitlist,
            ("GET", ["waitlist", "records"]) => InternalRoute::WaitlistRecords,
            ("GET", ["waitlist", "offers"]) => InternalRoute::WaitlistOffers,
            ("GET", ["waitlist", "entries"]) => InternalRoute::WaitlistEntries,
            ("POST", ["waitlist", "close"]) => InternalRoute::CloseWaitlist,
            ("POST", ["waitlist", "forget"]) => InternalRoute::ForgetWaitlistAddress,
            ("POST", ["holds"]) => InternalRoute::PlaceHold,
            ("GET", ["holds", hold]) => InternalRoute::Hold((*hold).to_owned()),
            ("POST", ["holds", hold, action]) => {
                InternalRoute::HoldAction((*hold).to_owned(), HoldAction::parse(action)?)
            }
            _ => return None,
        })
    }
}

/// A hold as the hold routes answer it: the fields the core acts on (the answer has more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldAnswer {
    pub id: String,
    pub state: HoldState,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
    /// Whose hold it is (the box office sells only its own).
    #[serde(default)]
    pub visitor: String,
    #[serde(default)]
    pub seats: Vec<crate::ids::SeatId>,
    /// General-admission places held.
    #[serde(default)]
    pub ga: Option<GaHeld>,
    /// The seated tier the seats are sold under.
    #[serde(default)]
    pub seated_tier: Option<crate::ids::TierId>,
}

/// General-admission places of a [`HoldAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaHeld {
    pub tier: crate::ids::TierId,
    pub quantity: u32,
}

impl HoldAnswer {
    /// What a hold token would grant for this hold (how checkout prices it).
    pub fn grant(&self) -> Option<crate::token::HoldGrant> {
        Some(crate::token::HoldGrant {
            hold: crate::ids::HoldId::parse(&self.id).ok()?,
            seats: self.seats.clone(),
            ga_tier: self.ga.as_ref().map(|g| g.tier.clone()),
            ga_quantity: self.ga.as_ref().map_or(0, |g| g.quantity),
            seated_tier: self.seated_tier.clone(),
            expires_at_ms: self.expires_at,
            extended: false,
        })
    }
}

/// One offer of [`InternalRoute::WaitlistOffers`]'s answer: who to write to, and the link's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistOffer {
    /// Its position in the list's history (the cursor to ask after).
    pub seq: i64,
    pub entry: u64,
    pub email: String,
    pub quantity: u32,
    /// The offer's end, in milliseconds since the epoch.
    pub until: i64,
    /// The edge-signed offer token (`typ: offer`) the mail's link carries.
    pub token: String,
}

/// What [`InternalRoute::WaitlistOffers`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistOffers {
    pub offers: Vec<WaitlistOffer>,
    /// The position to ask after next time.
    pub next: i64,
}

/// What [`InternalRoute::Layout`] answers: the fields the core acts on (the answer has more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutAnswer {
    /// The inventory version the edge holds.
    pub inventory_version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_back_from_its_own_path() {
        let routes = [
            InternalRoute::PutInventory,
            InternalRoute::Stats,
            InternalRoute::Layout,
            InternalRoute::PutWaitingRoom,
            InternalRoute::WaitingRoom,
            InternalRoute::EndSession,
            InternalRoute::Waitlist,
            InternalRoute::WaitlistRecords,
            InternalRoute::WaitlistOffers,
            InternalRoute::WaitlistEntries,
            InternalRoute::CloseWaitlist,
            InternalRoute::ForgetWaitlistAddress,
            InternalRoute::PlaceHold,
            InternalRoute::Hold("h-1".into()),
        ]
        .into_iter()
        .chain(HoldAction::ALL.map(|a| InternalRoute::HoldAction("h-1".into(), a)));
        for route in routes {
            let path = route.path("ev-1");
            let rest: Vec<&str> = path.strip_prefix(PREFIX).unwrap().split('/').skip(1).collect();
            assert_eq!(InternalRoute::parse(route.method(), &rest), Some(route.clone()), "{path}");
        }
        assert_eq!(InternalRoute::parse("GET", &["inventory"]), None);
        assert_eq!(InternalRoute::parse("POST", &["holds", "h", "steal"]), None);
    }

    #[test]
    fn a_hold_answer_reads_the_edges_hold() {
        let hold: HoldAnswer = serde_json::from_str(
            r#"{"id":"h-1","visitor":"v","seats":["A-1"],"created_at":1,"expires_at":2,"extended":true,"state":"held"}"#,
        )
        .unwrap();
        assert_eq!((hold.state, hold.expires_at), (HoldState::Held, 2));
        let ga: HoldAnswer = serde_json::from_str(
            r#"{"id":"h-2","visitor":"box-office_1","ga":{"tier":"floor","quantity":3},"created_at":1,"expires_at":2,"extended":false,"state":"held"}"#,
        )
        .unwrap();
        let grant = ga.grant().unwrap();
        assert_eq!((grant.ga_tier.unwrap().as_str(), grant.ga_quantity, grant.seats.len()), ("floor", 3, 0));
        assert_eq!(ga.visitor, "box-office_1");
    }
}
