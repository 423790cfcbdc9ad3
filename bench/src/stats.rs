//! Latency samples and the percentiles the tables print.

/// Collected latency samples in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    ns: Vec<u64>,
}

impl Samples {
    /// An empty sample set with room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ns: Vec::with_capacity(n),
        }
    }

    /// Records one sample.
    pub fn push(&mut self, ns: u64) {
        self.ns.push(ns);
    }

    /// Adds every sample of `other`.
    pub fn append(&mut self, other: Samples) {
        self.ns.extend(other.ns);
    }

    /// The mean in nanoseconds, or 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.ns.is_empty() {
            return 0.0;
        }
        self.ns.iter().map(|&x| x as f64).sum::<f64>() / self.ns.len() as f64
    }

    /// The `p`-th percentile (0.0..=100.0) in nanoseconds, or 0 when empty.
    pub fn percentile(&mut self, p: f64) -> u64 {
        if self.ns.is_empty() {
            return 0;
        }
        self.ns.sort_unstable();
        let rank = ((p / 100.0) * (self.ns.len() - 1) as f64).round() as usize;
        self.ns[rank.min(self.ns.len() - 1)]
    }
}

/// Formats nanoseconds as microseconds with two decimals.
pub fn us(ns: u64) -> String {
    format!("{:.2} µs", ns as f64 / 1000.0)
}

/// Formats a ratio `a / b` as e.g. `1.07x`.
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".to_owned()
    } else {
        format!("{:.2}x", a / b)
    }
}

/// Ratios of measured to floor values taken in the same round (back to back, so both saw
/// the same host state), summarised as median, minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedRatio {
    /// Median of the per-round ratios.
    pub median: f64,
    /// Smallest per-round ratio.
    pub min: f64,
    /// Largest per-round ratio.
    pub max: f64,
}

impl PairedRatio {
    /// From `(measured, floor)` pairs; rounds with a zero floor are skipped. `None` if none is left.
    pub fn of(pairs: &[(u64, u64)]) -> Option<Self> {
        let mut r: Vec<f64> = pairs
            .iter()
            .filter(|&&(_, f)| f > 0)
            .map(|&(m, f)| m as f64 / f as f64)
            .collect();
        if r.is_empty() {
            return None;
        }
        let median = median(&mut r);
        Some(Self {
            median,
            min: r[0],
            max: r[r.len() - 1],
        })
    }
}

/// The median of `v` (the upper one for an even count), sorting `v` in place. `v` must not be
/// empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_rank() {
        let mut s = Samples::with_capacity(100);
        for v in (1..=100).rev() {
            s.push(v);
        }
        assert_eq!(s.percentile(0.0), 1);
        assert_eq!(s.percentile(50.0), 51);
        assert_eq!(s.percentile(100.0), 100);
        assert_eq!(ratio(3.0, 2.0), "1.50x");
    }

    #[test]
    fn paired_ratios_pair_rounds_not_pools() {
        // A host that is 4x slower in the first round: pooled medians would mix the rounds,
        // paired ratios do not.
        let r = PairedRatio::of(&[(800, 400), (150, 100), (240, 100), (0, 0)]).unwrap();
        assert_eq!((r.min, r.median, r.max), (1.5, 2.0, 2.4));
        assert_eq!(PairedRatio::of(&[(5, 0)]), None);
    }
}
