//! The regional core: the organizers' admin API, checkout, payments, fulfillment, check-in and
//! reporting, on PostgreSQL. It never writes seat state: the inventory Durable Objects own it.

pub mod accounts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod box_office;
pub mod bus;
pub mod catalog;
pub mod checkout;
pub mod config;
pub mod db;
pub mod demo;
pub mod edge_client;
pub mod error;
pub mod events;
pub mod extract;
pub mod figures;
pub mod fulfillment;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod models;
pub mod notifications;
pub mod origin;
pub mod payments;
pub mod privacy;
pub mod promotions;
pub mod publishing;
pub mod reporting;
pub mod router;
pub mod series;
pub mod serve;
pub mod shutdown;
pub mod sms;
pub mod state;
pub mod telemetry;
pub mod templates;
pub mod tokens;
pub mod validate;
pub mod venues;
pub mod webhooks;

pub use config::{Command, Config, DatabaseArgs, DatabaseUrl, ServeArgs};
pub use router::{metrics_router, router, router_with};
pub use serve::serve;
pub use state::AppState;
