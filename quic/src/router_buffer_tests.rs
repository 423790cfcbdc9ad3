//! Fresh user R14: random peer input against the router's `buffered` accounting (debug build:
//! an underflow panics), input continuing after errors as it does during the close linger.

use super::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn attack_random_peer_input_never_underflows_buffered_and_resets_free_all() {
    for seed in 1..300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut io = Fake::new();
        let mut r = server_after_hello();
        let base = r.buffered_bytes();
        // Per peer stream: the bytes it will send.
        let mut plan: HashMap<u64, (Vec<u8>, usize)> = HashMap::new();
        for step in 0..400 {
            let s = 4 * (1 + rng.below(12));
            let id = (s as u32 / 4) * 2 + 1 + 1000 * (step as u32 % 3 / 2);
            let e = plan.entry(s).or_insert_with(|| (Vec::new(), 0));
            if e.1 >= e.0.len() {
                // Next frames for this stream: a Request of random size, sometimes junk.
                let kind = match rng.below(6) {
                    0 => FrameKind::StreamData,
                    1 => FrameKind::Cancel,
                    _ => FrameKind::Request,
                };
                let n = [0usize, 10, 1000, 70_000, 200_000][rng.below(5) as usize];
                let mut fr = frame(kind, Flags::empty(), id, &vec![7; n]);
                if rng.below(20) == 0 {
                    fr[0] = rng.below(256) as u8; // a bad length
                }
                e.0 = fr;
                e.1 = 0;
            }
            match rng.below(10) {
                0 => {
                    r.on_reset(s, CANCELLED, |_| {});
                }
                1 => r.on_stopped(&mut io, s, CANCELLED, |_| {}),
                _ => {
                    let left = e.0.len() - e.1;
                    let take = (1 + rng.below(80_000) as usize).min(left);
                    let chunk = e.0[e.1..e.1 + take].to_vec();
                    e.1 += take;
                    let fin = rng.below(15) == 0;
                    let _ = r.on_bytes(s, &chunk, fin, |_| {});
                }
            }
        }
        for s in plan.keys() {
            r.on_reset(*s, CANCELLED, |_| {});
        }
        assert_eq!(
            r.buffered_bytes(),
            base,
            "seed {seed}: resets leave bytes counted"
        );
    }
}
