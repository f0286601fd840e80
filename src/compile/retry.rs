//! An HTTPRoute rule's `retry` (experimental channel), compiled: which answers are
//! tried again, how many times, and how long apart. Only a request whose body was
//! held whole is ever sent twice (`proxy::retry`).

use std::time::Duration;

use gateway_api::httproutes::HttpRouteRulesRetry;

/// Retries when `attempts` is left out: one, as most proxies do.
const DEFAULT_ATTEMPTS: u32 = 1;
/// The most retries a rule may ask for: each one holds the request's body and a
/// connection for another round trip.
pub const MAX_ATTEMPTS: u32 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Status codes answered by the backend that are tried again.
    pub codes: Vec<u16>,
    /// Retries after the first attempt.
    pub attempts: u32,
    /// The least wait before each retry.
    pub backoff: Duration,
}

impl Retry {
    pub fn retries_status(&self, status: u16) -> bool {
        self.codes.contains(&status)
    }
}

/// The rule's retry policy, or the field and message of one that cannot be applied.
pub fn rule_retry(
    retry: Option<&HttpRouteRulesRetry>,
    field: &str,
) -> Result<Option<Retry>, (String, String)> {
    let Some(r) = retry else {
        return Ok(None);
    };
    let field = format!("{field}.retry");
    let bad = |sub: &str, what: String| Err((format!("{field}.{sub}"), what));
    let attempts = match r.attempts {
        None => DEFAULT_ATTEMPTS,
        Some(n) if (1..=i64::from(MAX_ATTEMPTS)).contains(&n) => n as u32,
        Some(n) => return bad("attempts", format!("{n} retries; use 1 to {MAX_ATTEMPTS}")),
    };
    let mut codes = Vec::new();
    for code in r.codes.iter().flatten() {
        match u16::try_from(*code) {
            Ok(c) if (400..=599).contains(&c) => codes.push(c),
            _ => {
                return bad(
                    "codes",
                    format!("{code} is not an error status (400 to 599)"),
                );
            }
        }
    }
    let backoff = match r.backoff.as_deref() {
        None => Duration::ZERO,
        Some(text) => match text.parse::<gateway_api::Duration>() {
            Ok(d) => Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Err(_) => {
                return bad(
                    "backoff",
                    format!("{text:?} is not a Gateway API duration (e.g. 100ms, 1s)"),
                );
            }
        },
    };
    Ok(Some(Retry {
        codes,
        attempts,
        backoff,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(attempts: Option<i64>, codes: &[i64], backoff: Option<&str>) -> HttpRouteRulesRetry {
        HttpRouteRulesRetry {
            attempts,
            codes: Some(codes.to_vec()),
            backoff: backoff.map(str::to_owned),
        }
    }

    #[test]
    fn a_retry_reads_its_codes_attempts_and_backoff() {
        let r = rule_retry(
            Some(&retry(Some(3), &[500, 503], Some("100ms"))),
            "spec.rules[0]",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.attempts, 3);
        assert!(r.retries_status(503) && !r.retries_status(502));
        assert_eq!(r.backoff, Duration::from_millis(100));
        let plain = rule_retry(Some(&retry(None, &[], None)), "f")
            .unwrap()
            .unwrap();
        assert_eq!((plain.attempts, plain.backoff), (1, Duration::ZERO));
        assert_eq!(rule_retry(None, "f"), Ok(None));
    }

    #[test]
    fn a_retry_that_cannot_be_applied_names_its_field() {
        for (bad, sub) in [
            (retry(Some(0), &[500], None), "attempts"),
            (retry(Some(11), &[500], None), "attempts"),
            (retry(Some(1), &[200], None), "codes"),
            (retry(Some(1), &[70000], None), "codes"),
            (retry(Some(1), &[500], Some("soon")), "backoff"),
        ] {
            let (field, _) = rule_retry(Some(&bad), "spec.rules[2]").unwrap_err();
            assert_eq!(field, format!("spec.rules[2].retry.{sub}"));
        }
    }
}
