//! How close one run's outputs are to a reference run's: the measures every report of
//! lutq uses (CLI `eval`, `cargo xtask zoo`, tests), defined once.

/// `10 log10(Σ ref² / Σ (ref − x)²)` in dB; infinite when identical.
pub fn sqnr_db(reference: &[f32], x: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&v| (v as f64).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(x)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (signal / noise).log10()
}

#[cfg(test)]
mod tests {
    use super::sqnr_db;

    #[test]
    fn sqnr_of_a_tenth_error_is_20_db() {
        assert!((sqnr_db(&[1.0, -1.0], &[0.9, -1.1]) - 20.0).abs() < 1e-4);
        assert!(sqnr_db(&[1.0, 2.0], &[1.0, 2.0]).is_infinite());
    }
}
