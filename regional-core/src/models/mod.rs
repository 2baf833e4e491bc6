//! The catalog's rows and the queries more than one part of the core needs: events and tiers,
//! venues and their seats, tickets. No HTTP handler lives here, so every layer may import it.

pub mod event;
pub mod ticket;
pub mod venue;
