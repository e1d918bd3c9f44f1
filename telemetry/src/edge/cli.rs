//! Command-line value parsers both services use for their flags.

/// A share from 0.0 to 1.0 (a failure rate, a ratio), for `value_parser`.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err("expected a number from 0.0 to 1.0".into()),
    }
}

/// A whole number from `min` to `max`, for `value_parser`. Negative and fractional input
/// reach it (flags take `allow_negative_numbers`) and are refused with the range, instead
/// of clap's "unexpected argument '-5'" or Rust's "invalid digit found in string".
pub fn parse_whole_in<T>(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: TryFrom<u64>,
{
    move |text: &str| {
        let wanted = || format!("expected a whole number from {min} to {max}");
        let value: u64 = text.trim().parse().map_err(|_| wanted())?;
        if !(min..=max).contains(&value) {
            return Err(wanted());
        }
        T::try_from(value).map_err(|_| wanted())
    }
}

/// A number of at least 0 (a rate per second), for `value_parser`.
pub fn non_negative(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err("expected a number of at least 0".into()),
    }
}

/// An `host:port` address to listen on: an IP address (`127.0.0.1:8080`, `[::1]:8080`,
/// `0.0.0.0:8080`) or `localhost:PORT`.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let hint =
        "expected IP:PORT, e.g. 127.0.0.1:8080 (all interfaces: 0.0.0.0:8080), or localhost:PORT";
    match text.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => port
            .parse::<u16>()
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| hint.to_owned()),
        _ => Err(hint.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_say_their_range() {
        let millis = parse_whole_in::<u64>(1, 60_000);
        assert_eq!(millis("250"), Ok(250));
        for bad in ["-5", "0", "60001", "1.5", "soon", ""] {
            assert_eq!(
                millis(bad),
                Err("expected a whole number from 1 to 60000".to_owned()),
                "{bad}"
            );
        }
        assert_eq!(parse_whole_in::<u32>(1, 10)("3"), Ok(3u32));
    }

    #[test]
    fn listen_takes_ips_and_localhost() {
        assert_eq!(
            parse_listen("127.0.0.1:8081"),
            Ok("127.0.0.1:8081".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen("localhost:8081"),
            Ok("127.0.0.1:8081".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen("[::1]:80"),
            Ok("[::1]:80".parse().expect("addr"))
        );
        assert!(
            parse_listen("8081")
                .expect_err("no host")
                .contains("IP:PORT")
        );
        assert!(parse_listen("localhost:port").is_err());
    }

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
