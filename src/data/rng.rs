//! Seeded randomness: every random choice derives from the pipeline seed and the
//! identity of what is drawn (a partition, a tree, a row), never from thread or
//! worker counts.
//!
//! In: a seed and identity words. Out: a [`SeededRng`] or a 64-bit hash.
//! Must not: read the clock or the OS entropy source.

use rand::{Rng as _, SeedableRng};
use rand_distr::Distribution;
use rand_xoshiro::Xoshiro256PlusPlus;

/// SplitMix64's finalizer: a bijective, well-mixed 64-bit hash step.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash a seed and identity words to 64 bits.
pub fn hash(seed: u64, ids: &[u64]) -> u64 {
    ids.iter().fold(mix(seed), |h, &i| mix(h ^ mix(i)))
}

/// Hash a string to an identity word (FNV-1a; stable across platforms and versions).
pub fn str_id(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A random stream for one identity.
pub struct SeededRng(Xoshiro256PlusPlus);

impl SeededRng {
    pub fn new(seed: u64, ids: &[u64]) -> Self {
        SeededRng(Xoshiro256PlusPlus::seed_from_u64(hash(seed, ids)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0), without modulo bias worth speaking of (Lemire).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.0.next_u64() as u128 * n as u128) >> 64) as usize
    }

    pub fn normal(&mut self) -> f64 {
        rand_distr::StandardNormal.sample(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_identity_same_stream_different_identity_different_stream() {
        let a: Vec<u64> = (0..4)
            .map(|_| SeededRng::new(1, &[2, 3]).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            SeededRng::new(1, &[2, 3]).next_u64(),
            SeededRng::new(1, &[2, 4]).next_u64()
        );
        let mut r = SeededRng::new(9, &[]);
        for _ in 0..1000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(7) < 7);
        }
    }
}
