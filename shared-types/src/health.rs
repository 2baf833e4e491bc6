//! The health chain: one document that says, tier by tier, whether a request can cross the system.
//!
//! The edge answers `GET /healthz` with a [`HealthReport`]; the core answers its own `GET /healthz`
//! with a [`CoreHealth`] that the edge folds in. A report never claims a tier is fine unless that
//! tier answered.

use serde::{Deserialize, Serialize};

/// A part of the system, in the order a buyer's request crosses them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The Worker that received the request.
    Edge,
    /// A Durable Object with its SQLite storage (write, then read back).
    DurableObject,
    /// The regional core's HTTP service.
    Core,
    /// The core's PostgreSQL database.
    Database,
}

/// The state of one tier, or of the whole chain.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Answered correctly within its timeout.
    Ok,
    /// Failed, answered wrongly or timed out.
    Down,
    /// Not checked because a tier in front of it is down (the database behind a dead core).
    Unknown,
}

/// What one tier's check found.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierReport {
    pub tier: Tier,
    pub status: HealthStatus,
    /// Wall time of the check as seen by whoever ran it; absent when the tier was not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Why the tier is not ok (or a short note when it is), for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For the database: the newest migration applied to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_version: Option<i64>,
}

impl TierReport {
    /// A tier that answered correctly.
    pub fn ok(tier: Tier, latency_ms: f64) -> Self {
        Self {
            tier,
            status: HealthStatus::Ok,
            latency_ms: Some(latency_ms),
            detail: None,
            migration_version: None,
        }
    }

    /// A tier that failed; `detail` says how.
    pub fn down(tier: Tier, latency_ms: f64, detail: impl Into<String>) -> Self {
        Self {
            tier,
            status: HealthStatus::Down,
            latency_ms: Some(latency_ms),
            detail: Some(detail.into()),
            migration_version: None,
        }
    }

    /// A tier that could not be checked; `detail` says what stood in the way.
    pub fn unknown(tier: Tier, detail: impl Into<String>) -> Self {
        Self {
            tier,
            status: HealthStatus::Unknown,
            latency_ms: None,
            detail: Some(detail.into()),
            migration_version: None,
        }
    }
}

/// The edge's answer to `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `ok` only when every tier is ok; `down` otherwise.
    pub status: HealthStatus,
    /// The tiers that are not ok, front to back; empty when all is well.
    pub failing: Vec<Tier>,
    /// Every tier, front to back.
    pub tiers: Vec<TierReport>,
}

impl HealthReport {
    /// Builds the report from the tiers' findings; the overall status and `failing` follow from them.
    pub fn from_tiers(mut tiers: Vec<TierReport>) -> Self {
        tiers.sort_by_key(|t| t.tier);
        let failing: Vec<Tier> =
            tiers.iter().filter(|t| t.status != HealthStatus::Ok).map(|t| t.tier).collect();
        let status =
            if failing.is_empty() && !tiers.is_empty() { HealthStatus::Ok } else { HealthStatus::Down };
        Self { status, failing, tiers }
    }

    /// 200 when every tier is ok, 503 otherwise (load balancers and uptime checks read only this).
    pub fn http_status(&self) -> u16 {
        if self.status == HealthStatus::Ok {
            200
        } else {
            503
        }
    }

    /// The report of one tier, if it was included.
    pub fn tier(&self, tier: Tier) -> Option<&TierReport> {
        self.tiers.iter().find(|t| t.tier == tier)
    }
}

/// The core's answer to its own `GET /healthz`: itself plus its database.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreHealth {
    /// `ok` when the core can serve (its database answers), `down` otherwise.
    pub status: HealthStatus,
    /// The core's build version.
    pub version: String,
    /// The database check, with the applied migration version.
    pub database: TierReport,
}

impl CoreHealth {
    /// Builds the core's answer; its status follows the database's.
    pub fn new(version: impl Into<String>, database: TierReport) -> Self {
        let status = if database.status == HealthStatus::Ok { HealthStatus::Ok } else { HealthStatus::Down };
        Self { status, version: version.into(), database }
    }

    /// 200 when the database answers, 503 otherwise.
    pub fn http_status(&self) -> u16 {
        if self.status == HealthStatus::Ok {
            200
        } else {
            503
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_ok() -> Vec<TierReport> {
        vec![
            TierReport::ok(Tier::Core, 3.0),
            TierReport::ok(Tier::Edge, 0.0),
            TierReport { migration_version: Some(1), ..TierReport::ok(Tier::Database, 1.0) },
            TierReport::ok(Tier::DurableObject, 2.0),
        ]
    }

    #[test]
    fn all_tiers_ok_is_200_and_ordered_front_to_back() {
        let report = HealthReport::from_tiers(all_ok());
        assert_eq!(report.status, HealthStatus::Ok);
        assert_eq!(report.http_status(), 200);
        assert!(report.failing.is_empty());
        let order: Vec<Tier> = report.tiers.iter().map(|t| t.tier).collect();
        assert_eq!(order, vec![Tier::Edge, Tier::DurableObject, Tier::Core, Tier::Database]);
    }

    #[test]
    fn a_down_core_names_core_and_its_unchecked_database() {
        let mut tiers = all_ok();
        tiers[0] = TierReport::down(Tier::Core, 2000.0, "timed out");
        tiers[2] = TierReport::unknown(Tier::Database, "core unreachable");
        let report = HealthReport::from_tiers(tiers);
        assert_eq!(report.status, HealthStatus::Down);
        assert_eq!(report.http_status(), 503);
        assert_eq!(report.failing, vec![Tier::Core, Tier::Database]);
    }

    #[test]
    fn an_empty_report_is_not_healthy() {
        assert_eq!(HealthReport::from_tiers(vec![]).http_status(), 503);
    }

    #[test]
    fn core_health_follows_its_database() {
        let up = CoreHealth::new("1", TierReport::ok(Tier::Database, 1.0));
        assert_eq!(up.http_status(), 200);
        let down = CoreHealth::new("1", TierReport::down(Tier::Database, 1.0, "refused"));
        assert_eq!(down.status, HealthStatus::Down);
        assert_eq!(down.http_status(), 503);
    }

    #[test]
    fn wire_format_is_snake_case_and_round_trips() {
        let report = HealthReport::from_tiers(all_ok());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["tiers"][1]["tier"], "durable_object");
        assert_eq!(json["tiers"][3]["migration_version"], 1);
        assert!(json["tiers"][0].get("detail").is_none());
        let back: HealthReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
