//! When to refresh, and how long to wait after a failed attempt.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Refresh this share of a token's lifetime before it expires...
    pub lead_percent: u32,
    /// ...but at least this long before...
    pub lead_min: Duration,
    /// ...and at most this long before.
    pub lead_max: Duration,
    /// Backoff after a transient failure: first delay, cap, and attempts in all.
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
    /// A token replaced less than this long ago is fresh: `TokenExpiring` is answered from it.
    pub debounce: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            lead_percent: 20,
            lead_min: Duration::from_secs(60),
            lead_max: Duration::from_secs(3600),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(300),
            max_attempts: 8,
            debounce: Duration::from_secs(60),
        }
    }
}

impl RefreshPolicy {
    /// When the built-in schedule refreshes a token issued now for `lifetime`. The lead never
    /// exceeds half the lifetime, so a short-lived token is not refreshed in a loop.
    pub fn next_refresh(&self, now: DateTime<Utc>, lifetime: Duration) -> DateTime<Utc> {
        let share = lifetime.mul_f64(f64::from(self.lead_percent.min(100)) / 100.0);
        let lead = share
            .clamp(self.lead_min, self.lead_max.max(self.lead_min))
            .min(lifetime / 2);
        now + chrono::Duration::from_std(lifetime.saturating_sub(lead)).unwrap_or_default()
    }

    /// How long to wait after failed attempt number `attempt` (1-based), or `None` when the
    /// attempts are spent. Exponential from `retry_min`, capped at `retry_max` (backon), with full
    /// jitter (a uniform draw from zero to that delay) so that replicas retrying after one outage
    /// spread out; never sooner than the platform's `Retry-After`; and, while the access token is
    /// still valid, early enough to try again before it expires.
    pub fn retry_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exponential = ExponentialBuilder::default()
            .with_min_delay(self.retry_min)
            .with_max_delay(self.retry_max)
            .with_factor(2.0)
            .with_max_times(self.max_attempts as usize)
            .build()
            .nth(attempt.saturating_sub(1) as usize)?;
        let mut delay = exponential.mul_f64(unit_random()).max(self.retry_min.min(exponential));
        if let Some(expires_at) = expires_at
            && let Ok(remaining) = (expires_at - now).to_std()
        {
            delay = delay.min(remaining / 2);
        }
        Some(delay.max(retry_after.unwrap_or_default()))
    }
}

/// A uniform draw from [0, 1).
fn unit_random() -> f64 {
    let bits = u64::from_le_bytes(crate::random::bytes::<8>()) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_leaves_a_lead_within_bounds() {
        let policy = RefreshPolicy::default();
        let now = Utc::now();
        let hour = policy.next_refresh(now, Duration::from_secs(3600));
        assert_eq!((hour - now).num_seconds(), 3600 - 720);
        let short = policy.next_refresh(now, Duration::from_secs(10));
        assert_eq!(
            (short - now).num_seconds(),
            5,
            "never more than half the lifetime early"
        );
        let long = policy.next_refresh(now, Duration::from_secs(60 * 86_400));
        assert_eq!((long - now).num_seconds(), 60 * 86_400 - 3600);
    }

    #[test]
    fn backoff_grows_is_capped_honours_retry_after_and_ends() {
        let policy = RefreshPolicy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            ..Default::default()
        };
        let now = Utc::now();
        for attempt in 1..8 {
            let delay = policy.retry_delay(attempt, None, now, None);
            let cap = Duration::from_secs(1 << (attempt - 1).min(3));
            assert!(
                delay.is_some_and(|d| d <= cap),
                "attempt {attempt}: {delay:?} within {cap:?}"
            );
        }
        assert_eq!(policy.retry_delay(8, None, now, None), None);
        let honoured = policy.retry_delay(1, Some(Duration::from_secs(30)), now, None);
        assert_eq!(honoured, Some(Duration::from_secs(30)));
        let before_expiry = policy.retry_delay(5, None, now, Some(now + chrono::Duration::seconds(4)));
        assert!(before_expiry.is_some_and(|d| d <= Duration::from_secs(2)));
    }
}
