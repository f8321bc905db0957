//! Splitting one wish list over several publisher nodes: `--shard K/N`.
//!
//! Every node reads the same wish list; node `K` of `N` converts (and prunes) exactly the images
//! whose name `<registry>/<repository>:<tag>` (after tag-glob expansion) it wins by rendezvous
//! hashing: each node `k` scores the name with SHA-256 of `k` and the name, and the highest score
//! takes the image. The score depends on nothing but the node's number and the name, so every
//! node agrees without talking to the others, and going from `N` to `N + 1` nodes moves only the
//! images the new node wins, about `1 / (N + 1)` of them.

use std::fmt;
use std::str::FromStr;

use ducc_oci::ImageRef;
use sha2::{Digest, Sha256};

/// One node's part of a wish list: node `index` of `count` (both from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// A `--shard` value that is not `K/N` with `1 <= K <= N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard {input:?}: {reason} (expected K/N with 1 <= K <= N, e.g. 2/3)")]
pub struct ShardError {
    input: String,
    reason: &'static str,
}

impl Shard {
    /// Node `index` of `count`.
    ///
    /// # Errors
    /// Unless `1 <= index <= count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        let input = format!("{index}/{count}");
        if count == 0 {
            return Err(ShardError {
                input,
                reason: "N is 0",
            });
        }
        if index == 0 || index > count {
            return Err(ShardError {
                input,
                reason: "K is not between 1 and N",
            });
        }
        Ok(Shard { index, count })
    }

    /// The whole list: node 1 of 1.
    pub fn all() -> Shard {
        Shard { index: 1, count: 1 }
    }

    /// This node's number, from 1.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many nodes share the list.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The node (from 1) of `count` that takes the image named `name`
    /// (`<registry>/<repository>:<tag>`).
    pub fn owner_of(name: &str, count: u32) -> u32 {
        (1..=count.max(1))
            .max_by_key(|node| score(*node, name))
            .unwrap_or(1)
    }

    /// Whether this node takes the image named `name` (`<registry>/<repository>:<tag>`).
    pub fn contains_name(&self, name: &str) -> bool {
        self.count <= 1 || Shard::owner_of(name, self.count) == self.index
    }

    /// Whether this node takes `image` (a plain tag or digest, as the wish list's expansion gives
    /// them); its name is [`ImageRef::simple_name`].
    pub fn contains(&self, image: &ImageRef) -> bool {
        self.contains_name(&image.simple_name())
    }
}

/// Node `node`'s score for `name`: the first 8 bytes of SHA-256 of the node's number (4 bytes,
/// big-endian) and the name. Ties are practically impossible; `max_by_key` takes the last node.
fn score(node: u32, name: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(node.to_be_bytes());
    hash.update(name.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(input: &str) -> Result<Shard, ShardError> {
        let bad = |reason| ShardError {
            input: input.to_owned(),
            reason,
        };
        let (k, n) = input.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let k: u32 = k.trim().parse().map_err(|_| bad("K is not a number"))?;
        let n: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        Shard::new(k, n).map_err(|e| ShardError {
            input: input.to_owned(),
            reason: e.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("registry.example.org/group{}/image:v{i}", i % 7))
            .collect()
    }

    #[test]
    fn shard_values_parse_and_bad_ones_are_refused() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard::new(2, 3).unwrap());
        assert_eq!("1/1".parse::<Shard>().unwrap(), Shard::all());
        assert_eq!(Shard::new(3, 4).unwrap().to_string(), "3/4");
        for bad in [
            "0/3", "4/3", "1/0", "0/0", "3", "a/3", "1/b", "-1/3", "", "1/2/3",
        ] {
            let error = bad.parse::<Shard>().unwrap_err();
            assert!(error.to_string().contains("K/N"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_owner_of_an_image_is_stable() {
        // Pinned (computed independently): these change only if the hash changes, which would
        // move images between the nodes of a running site.
        let names = [
            "a/b:1",
            "a/b:2",
            "r.example/x/y:latest",
            "docker.io/library/ubuntu:24.04",
        ];
        let owners = |count| {
            names
                .iter()
                .map(|n| Shard::owner_of(n, count))
                .collect::<Vec<_>>()
        };
        assert_eq!(owners(5), [2, 1, 4, 5]);
        assert_eq!(owners(2), [2, 1, 1, 2]);
        assert_eq!(owners(1), [1, 1, 1, 1]);
        assert_eq!(score(1, "a/b:1"), {
            let digest = Sha256::digest([&1u32.to_be_bytes()[..], b"a/b:1"].concat());
            u64::from_be_bytes(digest[..8].try_into().unwrap())
        });
    }

    #[test]
    fn every_image_has_exactly_one_node_and_the_nodes_share_evenly() {
        let names = names(3000);
        for count in 1..=5u32 {
            let shards: Vec<Shard> = (1..=count).map(|k| Shard::new(k, count).unwrap()).collect();
            let mut per_node = vec![0usize; count as usize];
            for name in &names {
                let owners: Vec<&Shard> = shards.iter().filter(|s| s.contains_name(name)).collect();
                assert_eq!(owners.len(), 1, "{name} with {count} nodes");
                per_node[owners[0].index() as usize - 1] += 1;
            }
            let fair = names.len() / count as usize;
            for taken in per_node {
                assert!(
                    taken.abs_diff(fair) < fair / 5 + 1,
                    "{taken} of {fair} with {count} nodes"
                );
            }
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_in_n_plus_one_images_all_to_the_new_node() {
        let names = names(3000);
        for count in 1..=5u32 {
            let mut moved = 0usize;
            for name in &names {
                let before = Shard::owner_of(name, count);
                let after = Shard::owner_of(name, count + 1);
                if before != after {
                    assert_eq!(after, count + 1, "{name} moved between old nodes");
                    moved += 1;
                }
            }
            let expected = names.len() / (count as usize + 1);
            assert!(
                moved.abs_diff(expected) < expected / 5,
                "{moved} moved, about {expected} expected going from {count} to {} nodes",
                count + 1
            );
        }
    }
}
