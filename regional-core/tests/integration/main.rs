//! The core's integration tests, in one binary (one link of the whole core instead of one per
//! file): each module is one part of the API against a fresh PostgreSQL database per test
//! (`#[sqlx::test]`). Shared helpers are in `common`.

mod accounts;
mod audit;
mod box_office;
mod catalog;
mod checkin;
mod checkout;
mod common;
mod health;
mod limits;
mod metrics;
mod notifications;
mod openapi;
mod privacy;
mod publishing;
mod reporting;
mod series;
mod sms;
mod stripe;
mod tickets;
mod tls;
mod transfers;
mod webhooks;
