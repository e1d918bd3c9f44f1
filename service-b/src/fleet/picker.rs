//! Which endpoint an attempt goes to: the power of two choices (Mitzenmacher; what Finagle,
//! Linkerd and Envoy's least-request balancer do). Two endpoints are drawn at random from
//! those in the choice and not yet tried by this call, and the one that costs less (see
//! `fleet::load`) gets the attempt: nearly as good as asking every endpoint, without
//! sending everyone to the same one at once.
//!
//! A retry goes elsewhere: an endpoint this call already tried is chosen only when no
//! other is in the choice (Envoy's `previous_hosts` retry predicate). When none is in the
//! choice at all (every one out, which ejection's cap allows only while probes of new ones
//! are pending), the least costly of all is tried rather than answering without trying.
//!
//! Why not `tower::balance::p2c`: it picks in `poll_ready`, before the request, with no way
//! to leave out the endpoint a retry must avoid; it has no ejection; and it waits while no
//! endpoint is ready, where B must answer at once.

/// What the picker knows of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// In the choice (not ejected, not waiting for a probe).
    pub in_use: bool,
    /// Already tried by this call.
    pub tried: bool,
    /// What one more attempt there costs (lower is better).
    pub cost: f64,
}

/// Which candidates one round of the choice considers.
type Eligible = fn(&Candidate) -> bool;

/// The index of the endpoint the next attempt goes to, or `None` when there are none.
/// `random(n)` draws uniformly from `0..n`.
pub fn pick(candidates: &[Candidate], mut random: impl FnMut(usize) -> usize) -> Option<usize> {
    // In order: in the choice and not tried, then in the choice, by two random choices;
    // then (nothing in the choice) not tried, then any, the least costly.
    let tiers: [(Eligible, bool); 4] = [
        (|c| c.in_use && !c.tried, true),
        (|c| c.in_use, true),
        (|c| !c.tried, false),
        (|_| true, false),
    ];
    for (eligible, two_choices) in tiers {
        let indices: Vec<usize> = (0..candidates.len())
            .filter(|i| eligible(&candidates[*i]))
            .collect();
        let cheaper = |a: usize, b: usize| {
            if candidates[b].cost < candidates[a].cost {
                b
            } else {
                a
            }
        };
        match indices.len() {
            0 => continue,
            1 => return Some(indices[0]),
            n if two_choices => {
                let first = random(n);
                let second = (first + 1 + random(n - 1)) % n;
                return Some(cheaper(indices[first], indices[second]));
            }
            _ => return indices.into_iter().reduce(cheaper),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn candidate(in_use: bool, tried: bool, cost: f64) -> Candidate {
        Candidate {
            in_use,
            tried,
            cost,
        }
    }

    #[test]
    fn the_cheaper_of_two_draws_wins() {
        let endpoints = [
            candidate(true, false, 5.0),
            candidate(true, false, 1.0),
            candidate(true, false, 3.0),
        ];
        // Draws: first 0, second 0 + 1 + 0 = 1 → endpoints 0 and 1.
        assert_eq!(pick(&endpoints, |_| 0), Some(1));
    }

    #[test]
    fn a_retry_goes_elsewhere_unless_nothing_else_is_in_the_choice() {
        let tried_first = [candidate(true, true, 0.1), candidate(true, false, 9.0)];
        assert_eq!(
            pick(&tried_first, |_| 0),
            Some(1),
            "elsewhere, however costly"
        );
        let other_out = [candidate(true, true, 0.1), candidate(false, false, 0.1)];
        assert_eq!(
            pick(&other_out, |_| 0),
            Some(0),
            "the only one in the choice"
        );
        let all_out = [
            candidate(false, false, 3.0),
            candidate(false, true, 2.0),
            candidate(false, false, 4.0),
        ];
        assert_eq!(pick(&all_out, |_| 0), Some(0), "the least costly not tried");
        assert_eq!(pick(&[], |_| 0), None);
    }

    #[test]
    fn equal_endpoints_share_the_attempts_fairly() {
        let endpoints = [candidate(true, false, 1.0); 4];
        let mut seed = 12345u64;
        let mut random = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut shares = [0u32; 4];
        for _ in 0..40_000 {
            shares[pick(&endpoints, &mut random).expect("one")] += 1;
        }
        for share in shares {
            assert!((9_000..11_000).contains(&share), "{shares:?}");
        }
    }

    fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec(
            (any::<bool>(), any::<bool>(), 0.0f64..10.0).prop_map(|(u, t, c)| candidate(u, t, c)),
            0..8,
        )
    }

    proptest! {
        #[test]
        fn never_a_tried_or_ejected_endpoint_while_another_is_fit(
            endpoints in candidates(),
            draws in proptest::collection::vec(any::<usize>(), 2),
        ) {
            let mut draws = draws.into_iter().cycle();
            let chosen = pick(&endpoints, |n| draws.next().unwrap_or(0) % n);
            prop_assert_eq!(chosen.is_some(), !endpoints.is_empty());
            if let Some(chosen) = chosen {
                let fit = |c: &Candidate| c.in_use && !c.tried;
                if endpoints.iter().any(fit) {
                    prop_assert!(fit(&endpoints[chosen]), "{:?}", endpoints);
                } else if endpoints.iter().any(|c| c.in_use) {
                    prop_assert!(endpoints[chosen].in_use, "{:?}", endpoints);
                }
            }
        }
    }
}
