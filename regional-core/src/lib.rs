//! The regional core: the organizers' admin API, checkout, payments, fulfillment, check-in and
//! reporting, on PostgreSQL. It never writes seat state: the inventory Durable Objects own it.

pub mod accounts;
pub mod api;
pub mod app;
pub mod auth;
pub mod bus;
pub mod catalog;
pub mod checkout;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod events;
pub mod fulfillment;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod notifications;
pub mod payments;
pub mod promotions;
pub mod publishing;
pub mod reporting;
pub mod venues;

pub use app::{metrics_router, router, router_with, serve, AppState};
pub use config::{Command, Config, DatabaseArgs, DatabaseUrl, ServeArgs};
