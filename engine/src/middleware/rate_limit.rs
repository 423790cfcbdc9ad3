//! [`RateLimit`]: a token bucket per peer (connection) and method.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::{Before, Interceptor, Status, StatusCode};

/// Default bound on the (peer, method) pairs tracked at once.
const DEFAULT_MAX_TRACKED: usize = 10_000;

/// A token-bucket rate limit per peer (calling connection) and method: each pair may make
/// `burst` calls at once and `per_second` calls per second after that; a call over the limit
/// is rejected with `ResourceExhausted` naming the limit (and the handler does not run).
/// [`RateLimit::method`] sets another limit for one method.
///
/// Memory is bounded: at most [`RateLimit::max_tracked`] pairs (default 10,000) are tracked.
/// When the table is full, buckets that refilled completely are dropped first (forgetting
/// them changes nothing), then the least recently used half; a dropped pair starts again
/// with a full bucket. Methods are told apart by a 64-bit hash of their name.
///
/// Cost per call: a mutex shared by the engine's cores (held for a map lookup and a little
/// arithmetic), one clock read, no allocation once the pair is tracked (a new pair may grow
/// the map).
pub struct RateLimit {
    default: Limit,
    methods: Vec<(Box<[u8]>, Limit)>,
    max_tracked: usize,
    buckets: Mutex<FxHashMap<(u64, u64), Bucket>>,
    epoch: Instant,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("per_second", &self.default.per_second)
            .field("burst", &self.default.burst)
            .field("max_tracked", &self.max_tracked)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Limit {
    per_second: f64,
    burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Seconds since the limiter's epoch at the last refill.
    at: f64,
    /// The limit this bucket refills by.
    limit: Limit,
}

impl RateLimit {
    /// `per_second` calls per second (a refill rate; below or at 0 means no call after
    /// the burst) with bursts of up to `burst` calls, per peer and method.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            default: Limit {
                per_second: per_second.max(0.0),
                burst,
            },
            methods: Vec::new(),
            max_tracked: DEFAULT_MAX_TRACKED,
            buckets: Mutex::default(),
            epoch: Instant::now(),
        }
    }

    /// Another limit for `method` (of any service).
    pub fn method(mut self, method: &str, per_second: f64, burst: u32) -> Self {
        self.methods.push((
            method.as_bytes().into(),
            Limit {
                per_second: per_second.max(0.0),
                burst,
            },
        ));
        self
    }

    /// Tracks at most `n` (peer, method) pairs at once (at least 1; default 10,000).
    pub fn max_tracked(mut self, n: usize) -> Self {
        self.max_tracked = n.max(1);
        self
    }

    /// The number of (peer, method) pairs tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }

    fn limit_of(&self, method: &[u8]) -> Limit {
        self.methods
            .iter()
            .find(|(m, _)| **m == *method)
            .map_or(self.default, |(_, l)| *l)
    }

    /// Takes one token of (`peer`, `method`) at time `now` (seconds since the epoch).
    fn take(&self, peer: u64, method: &[u8], now: f64) -> Result<(), Limit> {
        let limit = self.limit_of(method);
        let key = (peer, rustc_hash::FxBuildHasher.hash_one(method));
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(&key) && map.len() >= self.max_tracked {
            self.evict(&mut map, now);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            at: now,
            limit,
        });
        b.tokens =
            (b.tokens + (now - b.at).max(0.0) * limit.per_second).min(f64::from(limit.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(limit)
        }
    }

    /// Makes room: drops full buckets, then the least recently used half.
    fn evict(&self, map: &mut FxHashMap<(u64, u64), Bucket>, now: f64) {
        // A bucket that refilled completely is as good as untracked.
        let full = |b: &Bucket| {
            b.tokens + (now - b.at).max(0.0) * b.limit.per_second >= f64::from(b.limit.burst)
        };
        map.retain(|_, b| !full(b));
        if map.len() >= self.max_tracked {
            let mut ats: Vec<f64> = map.values().map(|b| b.at).collect();
            let mid = ats.len() / 2;
            ats.select_nth_unstable_by(mid, f64::total_cmp);
            let cut = ats[mid];
            map.retain(|_, b| b.at > cut);
        }
    }
}

impl Interceptor for RateLimit {
    fn before(&self, call: &mut Before<'_>) -> Result<(), Status> {
        let method = call.method().unwrap_or_default();
        let now = self.epoch.elapsed().as_secs_f64();
        self.take(call.peer(), method, now).map_err(|limit| {
            Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "rate limit exceeded for method {}: {} calls per second with bursts of {} \
                     per connection and method (RateLimit interceptor); retry later",
                    String::from_utf8_lossy(&method[..method.len().min(128)]),
                    limit.per_second,
                    limit.burst
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_stay_bounded() {
        let rl = RateLimit::new(10.0, 3)
            .method("slow", 1.0, 1)
            .max_tracked(4);
        for _ in 0..3 {
            assert!(rl.take(1, b"add", 0.0).is_ok());
        }
        assert!(rl.take(1, b"add", 0.0).is_err());
        // Another peer, another method: their own buckets.
        assert!(rl.take(2, b"add", 0.0).is_ok());
        assert!(rl.take(1, b"slow", 0.0).is_ok());
        assert!(rl.take(1, b"slow", 0.5).is_err());
        // 0.1 s later one token is back for `add`.
        assert!(rl.take(1, b"add", 0.1).is_ok());
        assert!(rl.take(1, b"add", 0.1).is_err());
        assert!(rl.take(1, b"slow", 1.0).is_ok());
        // Many peers: never more than 4 tracked.
        for p in 10..1_000 {
            assert!(rl.take(p, b"add", 2.0).is_ok());
            assert!(rl.tracked() <= 4);
        }
    }
}
