//! HTTPRoute `RequestMirror` filters, compiled: which Service gets a copy of a rule's
//! requests, and how many of them. The copies themselves are the data plane's
//! (`proxy::mirror`).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use gateway_api::httproutes::{
    HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFiltersRequestMirror,
};

use super::{Backend, Cond};

/// One `RequestMirror` filter of a rule, shared by every route its matches and hosts
/// compile to, so its cap on copies in flight holds for the rule as a whole.
pub struct Mirror {
    /// The Service port that gets the copies (`Backend::Service`, or `Unavailable`
    /// while it has no endpoints: no copy is sent then).
    pub backend: Backend,
    /// The share of requests copied.
    pub share: Share,
    /// Copies sent and not yet answered. A new snapshot starts its own count; copies
    /// of the old one finish against the old.
    pub in_flight: AtomicUsize,
}

/// `numerator` in `denominator` requests (`percent` is n in 100; neither: all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub numerator: u32,
    pub denominator: u32,
}

impl Share {
    pub const ALL: Share = Share {
        numerator: 1,
        denominator: 1,
    };

    /// Whether a request drawn as `random` is one of the share.
    pub fn picks(self, random: u64) -> bool {
        self.numerator >= self.denominator
            || random % u64::from(self.denominator.max(1)) < u64::from(self.numerator)
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("share", &self.share)
            .finish()
    }
}

/// The share a filter asks for, or the field and message of one that cannot be read.
pub fn share(
    m: &HttpRouteRulesFiltersRequestMirror,
    field: &str,
) -> Result<Share, (String, String)> {
    let bad = |what: &str| Err((field.to_owned(), what.to_owned()));
    match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => bad("requestMirror takes percent or fraction, not both"),
        (Some(p), None) if (0..=100).contains(&p) => Ok(Share {
            numerator: p as u32,
            denominator: 100,
        }),
        (Some(_), None) => bad("requestMirror.percent must be 0 to 100"),
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(100);
            if f.numerator < 0 || denominator < 1 || f.numerator > denominator {
                return bad(
                    "requestMirror.fraction needs 0 <= numerator <= denominator and denominator >= 1",
                );
            }
            Ok(Share {
                numerator: f.numerator as u32,
                denominator: denominator as u32,
            })
        }
        (None, None) => Ok(Share::ALL),
    }
}

/// The mirrors of a rule, their Services resolved by `resolve` (a backendRef's own
/// checks: kind, ReferenceGrant, existence, port). `Err` is the field and the
/// ResolvedRefs condition of the first that cannot be used: the rule then answers
/// 500, never without its mirror.
pub fn rule_mirrors(
    rule: &HttpRouteRules,
    field: &str,
    resolve: &mut dyn FnMut(&HttpRouteRulesBackendRefs, &str) -> Result<Backend, Cond>,
) -> Result<Vec<Arc<Mirror>>, (String, Cond)> {
    let mut out = Vec::new();
    for (i, f) in rule.filters.iter().flatten().enumerate() {
        let Some(m) = &f.request_mirror else {
            continue;
        };
        let ffield = format!("{field}.filters[{i}].requestMirror");
        let share = share(m, &ffield)
            .map_err(|(f, message)| (f, Cond::no("ResolvedRefs", "UnsupportedValue", message)))?;
        let r = &m.backend_ref;
        let as_ref = HttpRouteRulesBackendRefs {
            group: r.group.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            port: r.port,
            ..Default::default()
        };
        let bfield = format!("{ffield}.backendRef");
        let backend = resolve(&as_ref, &bfield).map_err(|cond| (bfield, cond))?;
        out.push(Arc::new(Mirror {
            backend,
            share,
            in_flight: AtomicUsize::new(0),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::httproutes::HttpRouteRulesFiltersRequestMirrorFraction;

    fn filter(
        percent: Option<i32>,
        fraction: Option<(i32, Option<i32>)>,
    ) -> HttpRouteRulesFiltersRequestMirror {
        HttpRouteRulesFiltersRequestMirror {
            percent,
            fraction: fraction.map(|(numerator, denominator)| {
                HttpRouteRulesFiltersRequestMirrorFraction {
                    numerator,
                    denominator,
                }
            }),
            ..Default::default()
        }
    }

    #[test]
    fn percent_and_fraction_read_as_a_share_and_bad_ones_name_their_field() {
        assert_eq!(share(&filter(None, None), "f"), Ok(Share::ALL));
        let half = Share {
            numerator: 50,
            denominator: 100,
        };
        assert_eq!(share(&filter(Some(50), None), "f"), Ok(half));
        assert_eq!(share(&filter(None, Some((50, None))), "f"), Ok(half));
        let third = share(&filter(None, Some((1, Some(3)))), "f").unwrap();
        assert_eq!((third.numerator, third.denominator), (1, 3));
        for bad in [
            filter(Some(101), None),
            filter(Some(-1), None),
            filter(None, Some((4, Some(3)))),
            filter(None, Some((1, Some(0)))),
            filter(Some(5), Some((1, None))),
        ] {
            let (field, _) = share(&bad, "spec.rules[0].filters[1]").unwrap_err();
            assert_eq!(field, "spec.rules[0].filters[1]");
        }
    }

    #[test]
    fn a_share_picks_its_proportion_of_draws() {
        let all = Share::ALL;
        let none = Share {
            numerator: 0,
            denominator: 100,
        };
        let fifth = Share {
            numerator: 20,
            denominator: 100,
        };
        assert!((0..1000).all(|r| all.picks(r)));
        assert!((0..1000).all(|r| !none.picks(r)));
        assert_eq!((0..1000).filter(|r| fifth.picks(*r)).count(), 200);
    }
}
