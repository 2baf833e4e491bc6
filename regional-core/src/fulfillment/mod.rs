//! Fulfillment: what a paid order gives its buyer. So far: ticket codes (signed by the core,
//! verifiable offline with its published public keys) and their QR codes ([`tickets`]), and
//! check-in at the gates over gRPC ([`checkin`]).

pub mod checkin;
pub mod tickets;
pub mod transfers;
