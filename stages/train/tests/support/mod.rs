//! What the train stage's tests share: a byte260 data folder and a synthetic corpus.

use pgolf_data::{write_shard, Split, TokenizerInfo};
use std::path::{Path, PathBuf};

pub const BOS: u16 = 1;

/// A data folder as the tokenize stage leaves it (byte260): shards and `tokenizer.json`.
pub fn data_dir(root: &Path, train: &[u16], val: &[u16]) -> PathBuf {
    let dir = root.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    write_shard(&dir.join(Split::Train.shard_name(0)), train).unwrap();
    write_shard(&dir.join(Split::Val.shard_name(0)), val).unwrap();
    TokenizerInfo::byte260().write(&dir).unwrap();
    dir
}

/// Documents from a sparse first-order Markov chain over 16 byte tokens (each symbol has two
/// likely successors): a source a small model learns quickly and cannot learn by chance.
pub fn markov_tokens(docs: usize, seed: u64) -> Vec<u16> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut out = Vec::new();
    for _ in 0..docs {
        out.extend([BOS]);
        let mut s = next() % 16;
        for _ in 0..60 {
            out.push(4 + b'a' as u16 + s as u16);
            s = if next() % 4 == 0 {
                (s * 7 + 3) % 16
            } else {
                (s * 5 + 1) % 16
            };
        }
    }
    out
}
