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
    samples: Vec<(Labels, f64)>,
}

/// Figures read at scrape time, encoded as they are: gauges, and counters another party counted
/// (the edge, librdkafka). Families keep the order they were first given in.
#[derive(Debug, Default)]
pub struct Snapshot {
    families: Vec<Figures>,
}

impl Snapshot {
    fn add(&mut self, name: &'static str, help: &'static str, kind: MetricType, labels: Labels, value: f64) {
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
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        self.add(name, help, MetricType::Gauge, labels, value);
    }

    /// A counter's value; `name` without `_total` (the encoder adds it).
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        self.add(name, help, MetricType::Counter, labels, value);
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
                match f.kind {
                    MetricType::Counter => ConstCounter::new(*value).encode(metric)?,
                    _ => ConstGauge::new(*value).encode(metric)?,
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
