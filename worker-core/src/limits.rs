//! Per-key request limits (`rate_limits`): an API key may be given a rate and a burst; a
//! request over it is answered 429 with `Retry-After`.
//!
//! Why counted in the key-value store: Spin runs many instances of the component at once (and
//! several `spin up` processes share one Redis), so a count kept in an instance's memory would
//! let each instance admit the whole rate. Each key's admitted requests are counted in windows
//! of `burst / rate` seconds (at least one second) with the store's atomic increment
//! (`wasi:keyvalue/atomics.increment`, the velocity store), and a request is admitted while the
//! sliding estimate `previous × (1 − elapsed fraction) + current` stays within the window's
//! allowance. One increment per request; the previous window's count is read once per window
//! and instance. A refused request is taken back out of the count, so a caller far over its
//! rate still gets the rate, not nothing.
//!
//! When the increment fails (the store unreachable), each instance falls back to a token
//! bucket of its own (capacity `burst`, refilled at `rate`): the limit then holds per instance
//! rather than across them, and the instance says so once in its log.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::host::Host;

/// Where window counts live in the velocity store: `ratelimit/<key name>/<window ms>/<n>`.
pub const RATE_PREFIX: &str = "ratelimit/";

/// A key's limit: requests per second and the burst it may send at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limit {
    pub(crate) per_second: f64,
    pub(crate) burst: u64,
}

impl Limit {
    /// Parses `<rate>` or `<rate>/<burst>` (requests per second, a whole burst; without one,
    /// a second's worth).
    pub(crate) fn parse(text: &str) -> Result<Limit, String> {
        let (rate, burst) = match text.split_once('/') {
            Some((r, b)) => (r.trim(), Some(b.trim())),
            None => (text.trim(), None),
        };
        let per_second: f64 = rate
            .parse()
            .ok()
            .filter(|r: &f64| r.is_finite() && *r > 0.0 && *r <= 1e6)
            .ok_or_else(|| format!("{rate:?} is not a rate from above 0 to 1000000 per second"))?;
        let burst = match burst {
            None => (per_second.ceil() as u64).max(1),
            Some(b) => b
                .parse::<u64>()
                .ok()
                .filter(|b| (1..=1_000_000_000).contains(b))
                .ok_or_else(|| format!("{b:?} is not a whole burst from 1 to 1000000000"))?,
        };
        Ok(Limit { per_second, burst })
    }

    /// The counting window in milliseconds (`burst / rate`, at least a second) and how many
    /// requests it admits (the burst, or a second's worth when that is more).
    fn window(&self) -> (u64, f64) {
        let ms = ((self.burst as f64 / self.per_second) * 1000.0)
            .clamp(1000.0, 86_400_000.0)
            .round() as u64;
        let allowance = (self.burst as f64).max(self.per_second * ms as f64 / 1000.0);
        (ms, allowance)
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s, burst {}", self.per_second, self.burst)
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit.
    Admit,
    /// Over it: try again in this many seconds (at least 1).
    Refuse { retry_after_secs: u64 },
}

/// One instance's view of the limits: the last finished window's count per key (read once)
/// and the fallback buckets.
#[derive(Default)]
pub(crate) struct Limiter {
    keys: RefCell<HashMap<String, KeyState>>,
}

#[derive(Default)]
struct KeyState {
    /// (window number, its count) of the window before the current one.
    previous: Option<(u64, i64)>,
    /// The per-instance bucket used while the store cannot count.
    bucket: Option<Bucket>,
    /// The fallback has been logged.
    warned: bool,
}

struct Bucket {
    tokens: f64,
    at_ns: u64,
}

impl Limiter {
    /// Counts one request of key `name` against `limit`.
    pub(crate) async fn check<H: Host>(
        &self,
        host: &'static H,
        name: &str,
        limit: &Limit,
    ) -> Verdict {
        let (window_ms, allowance) = limit.window();
        let now_ms = u64::try_from(host.now().timestamp_millis()).unwrap_or(0);
        let window = now_ms / window_ms;
        let elapsed = (now_ms % window_ms) as f64 / window_ms as f64;
        let key = |n: u64| format!("{RATE_PREFIX}{name}/{window_ms}/{n}");
        let current = match host.state_increment(&key(window), 1).await {
            Ok(n) => n,
            Err(e) => return self.fallback(host, name, limit, &e),
        };
        if current == 1 {
            // The window's first request clears what the last active window left (its count
            // and the zero its read of the window before created): a key keeps a few entries
            // however sparse its traffic.
            let last_key = format!("{RATE_PREFIX}{name}/{window_ms}/last");
            let prefix = format!("{RATE_PREFIX}{name}/{window_ms}/");
            host.spawn(Box::pin(async move {
                let last = host
                    .state_get(&last_key)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| String::from_utf8(b).ok()?.parse::<u64>().ok());
                if last.is_some_and(|l| l >= window) {
                    return; // a later window's first request got here first
                }
                let _ = host
                    .state_set(&last_key, window.to_string().as_bytes())
                    .await;
                for n in last.into_iter().flat_map(|l| [l.wrapping_sub(1), l]) {
                    if n.wrapping_add(1) < window {
                        let _ = host.state_delete(&format!("{prefix}{n}")).await;
                    }
                }
            }));
        }
        let cached = self
            .keys
            .borrow()
            .get(name)
            .and_then(|s| s.previous)
            .filter(|(n, _)| *n + 1 == window)
            .map(|(_, count)| count);
        let previous = match cached {
            Some(count) => count,
            // Adding 0 reads the count in whatever form the store keeps integers.
            None => match host.state_increment(&key(window.wrapping_sub(1)), 0).await {
                Ok(count) => {
                    let mut keys = self.keys.borrow_mut();
                    keys.entry(name.to_owned()).or_default().previous =
                        Some((window.wrapping_sub(1), count));
                    count
                }
                Err(_) => 0,
            },
        };
        let (previous, current) = (previous.max(0) as f64, current.max(0) as f64);
        if previous * (1.0 - elapsed) + current <= allowance {
            return Verdict::Admit;
        }
        // Not admitted, so not counted: a caller far over its rate still gets the rate.
        let _ = host.state_increment(&key(window), -1).await;
        let wait = seconds_until_room(previous, current - 1.0, elapsed, window_ms, allowance);
        Verdict::Refuse {
            retry_after_secs: wait,
        }
    }

    /// The per-instance token bucket, while the store cannot count.
    fn fallback<H: Host>(&self, host: &H, name: &str, limit: &Limit, error: &str) -> Verdict {
        let now = host.monotonic_ns();
        let mut keys = self.keys.borrow_mut();
        let state = keys.entry(name.to_owned()).or_default();
        if !state.warned {
            state.warned = true;
            eprintln!(
                "worker: rate limit of key {name} counted by this instance alone (the key-value \
                 store's increment failed: {error})"
            );
        }
        let burst = limit.burst as f64;
        let bucket = state.bucket.get_or_insert(Bucket {
            tokens: burst,
            at_ns: now,
        });
        let refill = now.saturating_sub(bucket.at_ns) as f64 / 1e9 * limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at_ns = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Admit
        } else {
            let secs = ((1.0 - bucket.tokens) / limit.per_second).ceil();
            Verdict::Refuse {
                retry_after_secs: (secs as u64).max(1),
            }
        }
    }
}

/// Seconds until one more request fits: `previous` and `current` counts (the refused request
/// not among them) at `elapsed` (a fraction) of a `window_ms` window admitting `allowance`.
fn seconds_until_room(
    previous: f64,
    current: f64,
    elapsed: f64,
    window_ms: u64,
    allowance: f64,
) -> u64 {
    let room = allowance - 1.0;
    let window = window_ms as f64 / 1000.0;
    let wait = if current <= room {
        // This window: the previous one's share has to fade to `room - current`.
        let fraction = if previous > 0.0 {
            1.0 - (room - current) / previous
        } else {
            elapsed
        };
        (fraction - elapsed) * window
    } else {
        // The next window, where this one's count fades instead.
        let fraction = 1.0 - room / current.max(1.0);
        (1.0 - elapsed) * window + fraction * window
    };
    (wait.ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_and_without_a_burst() {
        assert_eq!(
            Limit::parse(" 100 / 250 ").unwrap(),
            Limit {
                per_second: 100.0,
                burst: 250
            }
        );
        assert_eq!(Limit::parse("0.5").unwrap().burst, 1);
        assert_eq!(Limit::parse("20").unwrap().burst, 20);
        for bad in ["", "0", "-1", "NaN", "inf", "10/0", "10/1.5", "ten", "10/"] {
            assert!(Limit::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn windows_hold_the_burst_and_at_least_a_second() {
        let w = |r: &str| Limit::parse(r).unwrap().window();
        assert_eq!(w("100/200"), (2000, 200.0));
        assert_eq!(w("1/60"), (60_000, 60.0));
        // A burst below a second's worth: one-second windows of a second's worth.
        assert_eq!(w("1000/10"), (1000, 1000.0));
    }

    #[test]
    fn retry_after_is_when_the_estimate_falls_below_the_allowance() {
        // Full window at its start, empty before it: wait for the next window, then some.
        assert_eq!(seconds_until_room(0.0, 10.0, 0.0, 1000, 10.0), 2);
        // Previous window full, current empty, 10 % in: 90 % of the previous still counts,
        // room appears once it fades below 9.
        assert_eq!(seconds_until_room(10.0, 0.0, 0.1, 10_000, 10.0), 1);
        assert_eq!(seconds_until_room(10.0, 5.0, 0.0, 10_000, 10.0), 6);
    }
}
