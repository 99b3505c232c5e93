//! Percentiles, medians and the record one (system, scenario, run) leaves in the JSON lines.

use serde::{Deserialize, Serialize};

/// Nearest-rank percentile of an ascending slice (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of the finite values (the mean of the middle two for an even count); NaN if none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// JSON has no NaN: serde_json writes it (an empty percentile) as `null`; read that back as NaN.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// What one (system, scenario, run) measured: one JSON line.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub bench: String,
    pub system: String,
    pub scenario: String,
    pub run: u32,
    pub seed: u64,
    pub subscribers: usize,
    /// Publishing lanes (publish calls in flight at once).
    pub lanes: usize,
    /// Offered publish rate for paced scenarios, events/s.
    pub offered_rate: Option<f64>,
    /// Events whose publish call returned without error.
    pub published: usize,
    /// Publish calls that failed (never counted as delivered or lost).
    pub publish_errors: usize,
    /// Deliveries the subscribers should have got (published events they want × subscribers).
    pub expected: usize,
    /// Distinct expected deliveries that arrived.
    pub delivered: usize,
    /// Expected deliveries that never arrived (within the grace period).
    pub lost: usize,
    /// Deliveries beyond the first of the same event to the same subscriber.
    pub dup: usize,
    /// Deliveries of events the subscriber did not want (a filter that let too much through).
    pub unwanted: usize,
    /// Published events per second, first publish start → last publish returned.
    #[serde(deserialize_with = "nan_if_null")]
    pub published_per_s: f64,
    /// Distinct deliveries per second over all subscribers, first publish start → last delivery.
    #[serde(deserialize_with = "nan_if_null")]
    pub delivered_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub p50_us: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub p90_us: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub p99_us: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub max_us: f64,
    /// Bytes the subscriber's connection received (filter scenario), protocol framing included.
    pub bytes_received: Option<u64>,
    /// `bytes_received` over the useful events delivered.
    pub bytes_per_useful: Option<f64>,
    /// Mean body size of the published events.
    #[serde(deserialize_with = "nan_if_null")]
    pub body_bytes: f64,
    /// Whether a returned publish means the event was stored (acked) by the system.
    pub acked: bool,
    #[serde(deserialize_with = "nan_if_null")]
    pub wall_s: f64,
    /// CPU time the system's server processes used, first publish → last expected delivery
    /// (user + system, every thread, from /proc); `None` where the system runs inside the
    /// bench process (gossipsub) or in results made before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// Why the measurement failed, if it did (the figures are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median([f64::NAN, 5.0]), 5.0);
        assert!(median([]).is_nan());
    }

    #[test]
    fn a_record_with_nan_survives_json() {
        let r = Record {
            p50_us: f64::NAN,
            ..Default::default()
        };
        let back: Record = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(back.p50_us.is_nan());
    }
}
