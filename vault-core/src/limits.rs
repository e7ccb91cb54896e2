//! Rate limits (token buckets) and the failed-login tracker.
//!
//! One bucket per tenant (its configured rate), one per source address (before
//! authentication, in the server), and a count of recent failed logins per source that the
//! server turns into a growing delay. All take the current [`Instant`] as an argument, so tests
//! drive them without waiting.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Most keys a keyed limiter tracks; past this, idle (full) buckets are dropped, and if that is
/// not enough, the oldest half.
const MAX_KEYS: usize = 65_536;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Places held per key (a source, a tenant, a token): at most a limit each. A place is given
/// back when the [`Place`] that holds it is dropped, so no path can forget to.
pub struct CountedPlaces<K: Eq + Hash> {
    counts: std::sync::Arc<Mutex<HashMap<K, usize>>>,
}

/// One place taken from [`CountedPlaces`].
pub struct Place<K: Eq + Hash> {
    counts: std::sync::Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash> Default for CountedPlaces<K> {
    fn default() -> Self {
        CountedPlaces {
            counts: std::sync::Arc::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> CountedPlaces<K> {
    /// A place for `key`, unless it holds `limit` already.
    pub fn take(&self, key: K, limit: usize) -> Option<Place<K>> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Place {
            counts: std::sync::Arc::clone(&self.counts),
            key,
        })
    }
}

impl<K: Eq + Hash> Drop for Place<K> {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// One token bucket: `per_second` calls on average, `burst` at once.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate: f64::from(per_second),
            burst,
            bucket: Mutex::new(Bucket::full(burst, Instant::now())),
        }
    }

    /// `per_minute` calls a minute on average, all of them at once at most.
    pub fn per_minute(per_minute: u32) -> RateLimit {
        let burst = f64::from(per_minute.max(1));
        RateLimit {
            rate: f64::from(per_minute) / 60.0,
            burst,
            bucket: Mutex::new(Bucket::full(burst, Instant::now())),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.rate
    }

    /// Takes one call's worth; `false` means over the limit.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bucket.take(self.rate, self.burst, now)
    }
}

/// A token bucket per key (e.g. per source address), with bounded memory.
pub struct KeyedRateLimit<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> KeyedRateLimit<K> {
    pub fn new(per_second: u32, burst: u32) -> Self {
        KeyedRateLimit {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn try_take(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, bucket| {
                bucket.refill(rate, burst, now);
                bucket.tokens < burst
            });
            if buckets.len() >= MAX_KEYS {
                let mut ages: Vec<Instant> = buckets.values().map(|b| b.last).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                buckets.retain(|_, bucket| bucket.last > cutoff);
            }
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(self.burst, now))
            .take(self.rate, self.burst, now)
    }
}

/// Failed logins per source within a window. From the [`FREE_FAILURES`]th failure on, each
/// further attempt from that source is delayed, doubling up to [`MAX_LOGIN_DELAY`].
pub struct LoginFailures {
    window: Duration,
    entries: Mutex<HashMap<std::net::IpAddr, (u32, Instant)>>,
    /// Sources with a login being held back right now: one at a time each.
    held: Mutex<std::collections::HashSet<std::net::IpAddr>>,
}

/// The key a source is counted under: the address itself for IPv4, its /64 for IPv6 (one
/// host usually owns a whole /64, and could otherwise rotate through it).
pub fn source_key(address: std::net::IpAddr) -> std::net::IpAddr {
    // An IPv4 client seen through a dual-stack socket (::ffff:a.b.c.d) is that IPv4 address,
    // not one of the /64 every such client would otherwise share.
    match address.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Failures that cost nothing.
pub const FREE_FAILURES: u32 = 3;
/// The first delay, and the longest.
pub const FIRST_LOGIN_DELAY: Duration = Duration::from_millis(100);
pub const MAX_LOGIN_DELAY: Duration = Duration::from_secs(5);

impl LoginFailures {
    pub fn new(window: Duration) -> Self {
        LoginFailures {
            window,
            entries: Mutex::new(HashMap::new()),
            held: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Marks a login from `source` as being held back; `false` if one already is (the caller
    /// refuses this one at once instead of queueing guesses in parallel).
    pub fn try_hold(&self, source: std::net::IpAddr) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(source_key(source))
    }

    pub fn release(&self, source: std::net::IpAddr) {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&source_key(source));
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, (u32, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Recent failures from `source` (within the window).
    pub fn recent(&self, source: std::net::IpAddr, now: Instant) -> u32 {
        match self.entries().get(&source_key(source)) {
            Some((count, first)) if now.saturating_duration_since(*first) < self.window => *count,
            _ => 0,
        }
    }

    /// How long to hold the next login attempt from a source with `recent` failures.
    pub fn delay(recent: u32) -> Duration {
        if recent < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (recent - FREE_FAILURES).min(16);
        FIRST_LOGIN_DELAY
            .saturating_mul(1 << doublings)
            .min(MAX_LOGIN_DELAY)
    }

    /// Counts a failure; returns the number of failures in the current window.
    pub fn failed(&self, source: std::net::IpAddr, now: Instant) -> u32 {
        let source = source_key(source);
        let window = self.window;
        let mut entries = self.entries();
        if entries.len() >= MAX_KEYS && !entries.contains_key(&source) {
            entries.retain(|_, (_, first)| now.saturating_duration_since(*first) < window);
        }
        let entry = entries.entry(source).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        entry.0
    }

    /// A successful login clears the source's count.
    pub fn succeeded(&self, source: std::net::IpAddr) {
        self.entries().remove(&source_key(source));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_key_and_given_back_on_drop() {
        let places = CountedPlaces::default();
        let first = places.take("a", 2).expect("first");
        let _second = places.take("a", 2).expect("second");
        assert!(places.take("a", 2).is_none());
        assert!(places.take("b", 2).is_some(), "another key has its own");
        drop(first);
        assert!(places.take("a", 2).is_some());
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_socket_are_told_apart() {
        let key = |text: &str| source_key(text.parse().expect("address"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("::ffff:10.0.0.1"), key("::ffff:10.0.0.2"));
        // IPv6 is counted per /64.
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let limit = RateLimit::new(2, 3);
        assert!((0..3).all(|_| limit.try_take(start)));
        assert!(!limit.try_take(start));
        // Half a second refills one call at 2/s.
        let later = start + Duration::from_millis(500);
        assert!(limit.try_take(later));
        assert!(!limit.try_take(later));
        // A long pause refills to the burst, not beyond.
        let much_later = later + Duration::from_secs(60);
        assert!((0..3).all(|_| limit.try_take(much_later)));
        assert!(!limit.try_take(much_later));
    }

    #[test]
    fn keyed_buckets_are_independent() {
        let now = Instant::now();
        let limit = KeyedRateLimit::new(1, 1);
        assert!(limit.try_take(&"a", now));
        assert!(!limit.try_take(&"a", now));
        assert!(limit.try_take(&"b", now));
    }

    #[test]
    fn ipv6_sources_count_per_64_and_one_login_is_held_at_a_time() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(other));
        let v4 = std::net::IpAddr::from([192, 0, 2, 7]);
        assert_eq!(source_key(v4), v4);
        let failures = LoginFailures::new(Duration::from_secs(60));
        let now = Instant::now();
        failures.failed(a, now);
        assert_eq!(failures.recent(b, now), 1);
        assert!(failures.try_hold(a));
        assert!(!failures.try_hold(b), "same /64: already held");
        failures.release(b);
        assert!(failures.try_hold(a));
    }

    #[test]
    fn login_delays_grow_after_the_free_failures_and_reset_on_success() {
        let now = Instant::now();
        let source = std::net::IpAddr::from([10, 0, 0, 1]);
        let failures = LoginFailures::new(Duration::from_secs(600));
        for expected in 1..=FREE_FAILURES {
            assert_eq!(failures.failed(source, now), expected);
        }
        assert_eq!(
            LoginFailures::delay(failures.recent(source, now)),
            FIRST_LOGIN_DELAY
        );
        failures.failed(source, now);
        assert_eq!(
            LoginFailures::delay(failures.recent(source, now)),
            FIRST_LOGIN_DELAY * 2
        );
        assert_eq!(LoginFailures::delay(100), MAX_LOGIN_DELAY);
        // The window passes: the count starts over.
        assert_eq!(failures.recent(source, now + Duration::from_secs(601)), 0);
        failures.succeeded(source);
        assert_eq!(failures.recent(source, now), 0);
    }
}
