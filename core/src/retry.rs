//! When a failed task runs again: exponential backoff with jitter.

use crate::clock::Millis;

/// Delay before the second attempt.
pub const BASE_DELAY_MS: Millis = 1_000;
/// Longest delay between attempts.
pub const MAX_DELAY_MS: Millis = 3_600_000;

/// The delay after failed attempt number `attempt` (from 1): 1 s, 2 s, 4 s, …
/// capped at an hour, each plus up to 25 % random jitter so that tasks that
/// failed together do not retry together. `unit` is a random number in [0, 1).
pub fn backoff_ms(attempt: u32, unit: f64) -> Millis {
    let exp = attempt.saturating_sub(1).min(32);
    let base = BASE_DELAY_MS.saturating_mul(1 << exp).min(MAX_DELAY_MS);
    base + (base as f64 * 0.25 * unit) as Millis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_and_caps() {
        assert_eq!(backoff_ms(1, 0.0), 1_000);
        assert_eq!(backoff_ms(2, 0.0), 2_000);
        assert_eq!(backoff_ms(3, 0.5), 4_500);
        assert_eq!(backoff_ms(40, 0.0), MAX_DELAY_MS);
        assert!(backoff_ms(4, 0.999) < 10_000);
    }
}
