//! Summaries of repeated measurements: min, median, max and percentiles.

/// Min, median and max of a set of samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// Summarises `samples` (all zero when empty).
pub fn summary(samples: &[f64]) -> Summary {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Summary {
        min: v[0],
        median,
        max: v[v.len() - 1],
    }
}

/// The `p` quantile (0..=1) of `sorted`, nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
