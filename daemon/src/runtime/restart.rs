//! The restart policy's arithmetic, without I/O: which restarts still count (those inside
//! the window), what comes after an exit (a restart after a backoff that doubles from
//! `delay_ms` up to `max_delay_ms` with ±20% jitter, `Failed` past the budget, or a wait
//! for room in the window), so that the runner only carries it out.

use agenfleet_protocol::{RestartMode, RestartSpec};

/// The jitter factor's bounds: a delay is `base × [0.8, 1.2)`.
pub const JITTER: std::ops::Range<f64> = 0.8..1.2;

/// What follows an exit.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Restart after `delay_ms`; this is restart number `attempt` of the budget.
    Restart { delay_ms: u64, attempt: u32 },
    /// The budget is used up and the mode is `fail`: `Failed` until a reset.
    Fail { restarts: u32 },
    /// The budget is used up and the mode is `delay`: restart when the window has room.
    WaitForRoom { delay_ms: u64, restarts: u32 },
}

/// Drops the restart times that left the window; answers how many remain.
pub fn prune(times: &mut Vec<u64>, now_ms: u64, p: &RestartSpec) -> u32 {
    let window = p.interval_secs.saturating_mul(1000);
    times.retain(|t| now_ms.saturating_sub(*t) < window);
    times.len() as u32
}

/// Restarts inside the window, without changing the list (for views).
pub fn in_window(times: &[u64], now_ms: u64, p: &RestartSpec) -> u32 {
    let window = p.interval_secs.saturating_mul(1000);
    times
        .iter()
        .filter(|t| now_ms.saturating_sub(**t) < window)
        .count() as u32
}

/// The backoff before restart number `n + 1` (n restarts in the window so far), before
/// jitter: `delay_ms × 2^n`, at most `max_delay_ms`.
pub fn backoff_ms(p: &RestartSpec, n: u32) -> u64 {
    p.delay_ms
        .saturating_mul(1u64 << n.min(30))
        .min(p.max_delay_ms)
}

/// A jitter factor drawn from `JITTER`.
pub fn jitter() -> f64 {
    use rand::Rng;
    rand::rng().random_range(JITTER)
}

/// What follows an exit at `now_ms`, given the restart times (pruned here) and a jitter
/// factor from `JITTER`.
pub fn after_exit(p: &RestartSpec, times: &mut Vec<u64>, now_ms: u64, jitter: f64) -> Next {
    let n = prune(times, now_ms, p);
    if n >= p.attempts {
        return match p.mode {
            RestartMode::Fail => Next::Fail { restarts: n },
            RestartMode::Delay => {
                let oldest = times.iter().min().copied().unwrap_or(now_ms);
                let window = p.interval_secs.saturating_mul(1000);
                Next::WaitForRoom {
                    delay_ms: oldest
                        .saturating_add(window)
                        .saturating_sub(now_ms)
                        .max(p.delay_ms),
                    restarts: n,
                }
            }
        };
    }
    let jitter = jitter.clamp(JITTER.start, JITTER.end);
    Next::Restart {
        delay_ms: (backoff_ms(p, n) as f64 * jitter) as u64,
        attempt: n + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: RestartMode) -> RestartSpec {
        RestartSpec {
            mode,
            attempts: 3,
            interval_secs: 60,
            delay_ms: 1000,
            max_delay_ms: 3000,
        }
    }

    #[test]
    fn the_delay_doubles_up_to_its_cap() {
        let p = spec(RestartMode::Fail);
        assert_eq!(
            (0..5).map(|n| backoff_ms(&p, n)).collect::<Vec<_>>(),
            vec![1000, 2000, 3000, 3000, 3000]
        );
        // No overflow however many restarts there were.
        let big = RestartSpec {
            max_delay_ms: u64::MAX,
            ..p
        };
        assert_eq!(backoff_ms(&big, 1000), 1000u64 << 30);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = spec(RestartMode::Fail);
        for _ in 0..10_000 {
            let j = jitter();
            assert!(JITTER.contains(&j), "{j}");
            let Next::Restart { delay_ms, attempt } = after_exit(&p, &mut vec![], 0, j) else {
                panic!("a restart")
            };
            assert_eq!(attempt, 1);
            assert!((800..1200).contains(&delay_ms), "{delay_ms}");
        }
        // A factor from outside is held to the bounds.
        let Next::Restart { delay_ms, .. } = after_exit(&p, &mut vec![], 0, 9.0) else {
            panic!("a restart")
        };
        assert_eq!(delay_ms, 1200);
    }

    #[test]
    fn only_restarts_inside_the_window_count() {
        let p = spec(RestartMode::Fail);
        let now = 1_000_000;
        let mut times = vec![now - 61_000, now - 60_000, now - 59_999, now - 1];
        assert_eq!(in_window(&times, now, &p), 2);
        assert_eq!(prune(&mut times, now, &p), 2);
        assert_eq!(times, vec![now - 59_999, now - 1]);
        let next = after_exit(&p, &mut times, now, 1.0);
        assert_eq!(
            next,
            Next::Restart {
                delay_ms: 3000,
                attempt: 3
            }
        );
    }

    #[test]
    fn past_the_budget_fail_mode_fails_and_delay_mode_waits_for_room() {
        let now = 1_000_000;
        let full = vec![now - 50_000, now - 20_000, now - 10];
        let next = after_exit(&spec(RestartMode::Fail), &mut full.clone(), now, 1.0);
        assert_eq!(next, Next::Fail { restarts: 3 });
        // The oldest leaves the window in 10 s.
        let next = after_exit(&spec(RestartMode::Delay), &mut full.clone(), now, 1.0);
        assert_eq!(
            next,
            Next::WaitForRoom {
                delay_ms: 10_000,
                restarts: 3
            }
        );
        // Never sooner than the base delay.
        let edge = vec![now - 59_900, now - 20_000, now - 10];
        let next = after_exit(&spec(RestartMode::Delay), &mut edge.clone(), now, 1.0);
        assert_eq!(
            next,
            Next::WaitForRoom {
                delay_ms: 1000,
                restarts: 3
            }
        );
    }
}
