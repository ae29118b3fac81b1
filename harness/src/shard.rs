//! Sharded runs (`run --shard K/N --seed S`): a deterministic partition of every selected
//! scenario's virtual users over N processes, so that N shards together run exactly what one
//! run would, and the seed every shard derives its markers from.
//!
//! Virtual user `g` (0-based, global) of the scenario at index `s` of the run's selection
//! belongs to shard `((g + s) mod N) + 1`: load is spread evenly and a scenario with one
//! virtual user lands on exactly one shard, a different one for each scenario. A shard runs
//! the scenario's arrival rate times its share of the virtual users.

use std::fmt;
use std::str::FromStr;

/// One shard of N (1-based), as `--shard K/N` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A `--shard` that is not `K/N` with `1 <= K <= N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("`{0}` is not K/N (e.g. 2/4)")]
    NotKOverN(String),
    #[error("`{0}`: K and N must be whole numbers")]
    NotNumbers(String),
    #[error("`{0}`: K must be between 1 and N (N at least 1)")]
    OutOfRange(String),
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (k, n) = (text.split_once('/')).ok_or_else(|| ShardError::NotKOverN(text.into()))?;
        let (Ok(index), Ok(count)) = (k.trim().parse::<u32>(), n.trim().parse::<u32>()) else {
            return Err(ShardError::NotNumbers(text.into()));
        };
        if count == 0 || index == 0 || index > count {
            return Err(ShardError::OutOfRange(text.into()));
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The shard (1-based) virtual user `vu` of the scenario at `scenario` in the selection
    /// runs on.
    pub fn of(scenario: usize, vu: u32, count: u32) -> u32 {
        let n = u64::from(count.max(1));
        ((u64::from(vu) + scenario as u64) % n) as u32 + 1
    }

    /// Whether this shard runs virtual user `vu` of the scenario at `scenario`.
    pub fn owns(&self, scenario: usize, vu: u32) -> bool {
        Self::of(scenario, vu, self.count) == self.index
    }

    /// The global indices of the virtual users of a scenario of `vus` users this shard runs.
    pub fn vus(shard: Option<Self>, scenario: usize, vus: u32) -> Vec<u32> {
        (0..vus)
            .filter(|&vu| shard.is_none_or(|s| s.owns(scenario, vu)))
            .collect()
    }
}

/// A fresh seed for a run without `--seed`.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A stable 32-bit tag of (seed, text): the same on every machine and every build (FNV-1a),
/// unlike the standard library's hashers.
pub fn tag(seed: u64, text: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.to_le_bytes().iter().chain(text.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash ^ (hash >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_over_n_and_refuses_the_rest() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, count: 4 }));
        assert!(matches!(
            "4".parse::<Shard>(),
            Err(ShardError::NotKOverN(_))
        ));
        assert!(matches!(
            "a/4".parse::<Shard>(),
            Err(ShardError::NotNumbers(_))
        ));
        assert!(matches!(
            "0/4".parse::<Shard>(),
            Err(ShardError::OutOfRange(_))
        ));
        assert!(matches!(
            "5/4".parse::<Shard>(),
            Err(ShardError::OutOfRange(_))
        ));
        assert!(matches!(
            "1/0".parse::<Shard>(),
            Err(ShardError::OutOfRange(_))
        ));
    }

    #[test]
    fn every_virtual_user_is_on_exactly_one_shard_and_load_is_even() {
        for n in 1..=5u32 {
            for scenario in 0..4usize {
                for vus in [1u32, 2, 7, 24] {
                    let shards: Vec<Vec<u32>> = (1..=n)
                        .map(|index| Shard::vus(Some(Shard { index, count: n }), scenario, vus))
                        .collect();
                    let mut all: Vec<u32> = shards.concat();
                    all.sort_unstable();
                    assert_eq!(all, (0..vus).collect::<Vec<_>>());
                    let (min, max) = (
                        shards.iter().map(Vec::len).min(),
                        shards.iter().map(Vec::len).max(),
                    );
                    assert!(max.unwrap_or(0) - min.unwrap_or(0) <= 1, "{shards:?}");
                }
            }
        }
        // One-VU scenarios spread over the shards.
        let of_one: Vec<u32> = (0..4).map(|s| Shard::of(s, 0, 4)).collect();
        assert_eq!(of_one, [1, 2, 3, 4]);
    }

    #[test]
    fn tags_are_stable_and_depend_on_seed_and_text() {
        assert_eq!(tag(7, "a.yaml"), tag(7, "a.yaml"));
        assert_ne!(tag(7, "a.yaml"), tag(8, "a.yaml"));
        assert_ne!(tag(7, "a.yaml"), tag(7, "b.yaml"));
    }
}
