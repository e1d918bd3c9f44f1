//! Command-line value parsers both services use for their flags.

/// A share from 0.0 to 1.0 (a failure rate, a ratio), for `value_parser`.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err("expected a number from 0.0 to 1.0".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_run_from_zero_to_one() {
        assert_eq!(parse_share("0.5"), Ok(0.5));
        assert_eq!(parse_share("0"), Ok(0.0));
        assert_eq!(parse_share("1"), Ok(1.0));
        for bad in ["-0.1", "1.5", "half", "NaN", ""] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }
}
