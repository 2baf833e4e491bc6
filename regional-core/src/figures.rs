//! Figures read at scrape time for `/metrics` (unfinished orders, the outbox, mail, the edge's
//! picture, consumer lag), encoded as they are with the `prometheus-client` crate. A leaf: the
//! parts that report figures ([`crate::bus::lag`], [`crate::reporting::edge`]) fill a [`Snapshot`]
//! without knowing the rest of `/metrics` ([`crate::metrics`]).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// A series' labels, in order.
pub type Labels = Vec<(&'static str, String)>;

/// One family of figures read at scrape time.
#[derive(Debug)]
struct Figures {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// A figure's value: counts stay integers in the text (`3`, not `3.0`), so readers that parse
/// integers keep working; durations and rates are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// Figures read at scrape time, encoded as they are: gauges, and counters another party counted
/// (the edge, librdkafka). Families keep the order they were first given in.
#[derive(Debug, Default)]
pub struct Snapshot {
    families: Vec<Figures>,
}

impl Snapshot {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: Labels,
        value: Value,
    ) {
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Figures { name, help, kind, samples: Vec::new() });
                self.families.len() - 1
            }
        };
        self.families[at].samples.push((labels, value));
    }

    /// A gauge's value (`help` without a final period: one is added).
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, value: impl Into<Value>) {
        self.add(name, help, MetricType::Gauge, labels, value.into());
    }

    /// A counter's value; `name` without `_total` (the encoder adds it).
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        value: impl Into<Value>,
    ) {
        self.add(name, help, MetricType::Counter, labels, value.into());
    }

    /// The snapshot alone, as Prometheus text.
    pub fn to_text(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        encode(&registry)
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for f in &self.families {
            // The same form as the registry gives the live metrics' help: a sentence.
            let help = format!("{}.", f.help);
            let mut family = encoder.encode_descriptor(f.name, &help, None, f.kind)?;
            for (labels, value) in &f.samples {
                let metric = family.encode_family(labels)?;
                // A counter cannot go below zero: a negative count (never expected) reads as 0.
                match (f.kind, *value) {
                    (MetricType::Counter, Value::Int(n)) => {
                        ConstCounter::new(u64::try_from(n).unwrap_or(0)).encode(metric)?
                    }
                    (MetricType::Counter, Value::Float(x)) => ConstCounter::new(x.max(0.0)).encode(metric)?,
                    (_, Value::Int(n)) => ConstGauge::new(n).encode(metric)?,
                    (_, Value::Float(x)) => ConstGauge::new(x).encode(metric)?,
                }
            }
        }
        Ok(())
    }
}

/// A registry as Prometheus text (format 0.0.4).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "metrics: encoding failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_integers_and_durations_floats() {
        let mut s = Snapshot::default();
        s.gauge("t_waiting", "Waiting", vec![("event", "e".into())], 3i64);
        s.counter("t_done", "Done", vec![], 2u64);
        s.gauge("t_age_seconds", "Age", vec![], 0.5);
        s.gauge("t_up", "Up", vec![], true);
        let text = s.to_text();
        let lines: Vec<&str> = text.lines().collect();
        for want in ["t_waiting{event=\"e\"} 3", "t_done_total 2", "t_age_seconds 0.5", "t_up 1"] {
            assert!(lines.contains(&want), "{want} not in {text}");
        }
    }
}
