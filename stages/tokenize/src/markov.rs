//! The synthetic source: a seeded first-order Markov chain over lowercase letters and single spaces
//! whose every probability is known, so the information content of each document is exact.
//!
//! States are START, one per letter, and SPACE. A document starts in START, which emits a letter;
//! a letter emits a letter, a space or the END event; a space emits a letter. So text is never empty,
//! never starts or ends with a space and never holds two spaces in a row, which keeps SentencePiece's
//! normalisation (nmt_nfkc, whitespace collapsing) lossless on it. Every letter state ends the
//! document with the same probability `p_end`, chosen so the expected length is `mean_doc_bytes`.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

const LETTERS: usize = 26;
const START: usize = 0;
const SPACE: usize = LETTERS + 1;
const STATES: usize = LETTERS + 2;

/// What a transition emits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Emit {
    Byte(u8),
    End,
}

#[derive(Clone, Debug)]
struct Transition {
    emit: Emit,
    probability: f64,
}

/// The chain: one row of transitions per state.
#[derive(Clone, Debug)]
pub struct MarkovSource {
    rows: Vec<Vec<Transition>>,
    /// Per row, the cumulative probabilities used for sampling.
    cumulative: Vec<Vec<f64>>,
    /// Per row, −log2 of each transition's probability.
    bits: Vec<Vec<f64>>,
    seed: u64,
}

/// One sampled document and its exact information content under the source.
pub struct SampledDoc {
    pub text: String,
    /// −log2 P(text, END).
    pub bits: f64,
}

impl MarkovSource {
    /// The chain for `seed`, with the end probability set so documents average `mean_doc_bytes`.
    pub fn new(seed: u64, mean_doc_bytes: f64) -> Result<MarkovSource> {
        if !(2.0..=1e7).contains(&mean_doc_bytes) {
            bail!("synthetic.mean_doc_bytes {mean_doc_bytes} is outside [2, 10^7]");
        }
        let shape = ChainShape::random(seed);
        // Expected length falls as p_end rises (1 byte at p_end = 1); bisect for the target.
        let (mut lo, mut hi) = (1e-12_f64, 1.0_f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if shape.with_end(mid, seed).expected_doc_bytes() > mean_doc_bytes {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(shape.with_end(0.5 * (lo + hi), seed))
    }

    /// Samples document `index`. Each document has its own PCG stream, so documents can be drawn
    /// in any order or in parallel and the corpus stays the same.
    pub fn sample(&self, index: u64) -> SampledDoc {
        let mut rng = Pcg64::new(seed_state(self.seed), index as u128);
        let mut text = Vec::new();
        let mut bits = 0.0;
        let mut state = START;
        loop {
            let u: f64 = rng.random();
            let row = &self.cumulative[state];
            let pick = row.iter().position(|&c| u < c).unwrap_or(row.len() - 1);
            bits += self.bits[state][pick];
            match self.rows[state][pick].emit {
                Emit::End => break,
                Emit::Byte(b) => {
                    text.push(b);
                    state = state_after(b);
                }
            }
        }
        SampledDoc {
            text: String::from_utf8(text).expect("the alphabet is ASCII"),
            bits,
        }
    }

    /// Expected bytes of a document (each non-END transition emits one byte).
    pub fn expected_doc_bytes(&self) -> f64 {
        let visits = self.expected_visits();
        (0..STATES)
            .map(|s| visits[s] * (1.0 - self.end_probability(s)))
            .sum()
    }

    /// Expected information of a document in bits, END event included.
    pub fn expected_doc_bits(&self) -> f64 {
        let visits = self.expected_visits();
        (0..STATES)
            .map(|s| visits[s] * self.row_entropy_bits(s))
            .sum()
    }

    /// The entropy rate of the document stream per byte of text: by renewal-reward, expected bits
    /// per document over expected bytes per document.
    pub fn entropy_rate_bpb(&self) -> f64 {
        self.expected_doc_bits() / self.expected_doc_bytes()
    }

    fn end_probability(&self, state: usize) -> f64 {
        self.rows[state]
            .iter()
            .filter(|t| t.emit == Emit::End)
            .map(|t| t.probability)
            .sum()
    }

    fn row_entropy_bits(&self, state: usize) -> f64 {
        self.rows[state]
            .iter()
            .zip(&self.bits[state])
            .map(|(t, b)| t.probability * b)
            .sum()
    }

    /// Expected visits to each state before END, starting in START: v = e_start + v·Q, with Q the
    /// state-to-state part of the transition matrix. Solved as (I − Q)ᵀ v = e_start.
    fn expected_visits(&self) -> Vec<f64> {
        let mut a = vec![vec![0.0; STATES]; STATES];
        for (i, row) in a.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        for (from, row) in self.rows.iter().enumerate() {
            for t in row {
                if let Emit::Byte(b) = t.emit {
                    a[state_after(b)][from] -= t.probability;
                }
            }
        }
        let mut rhs = vec![0.0; STATES];
        rhs[START] = 1.0;
        solve(a, rhs)
    }
}

fn state_after(byte: u8) -> usize {
    if byte == b' ' {
        SPACE
    } else {
        1 + (byte - b'a') as usize
    }
}

fn seed_state(seed: u64) -> u128 {
    // Spread the seed over the 128-bit state so nearby seeds give unrelated streams.
    (seed as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ 0xA076_1D64_78BD_642F
}

/// The random part of the chain before the end probability is fixed: which letters follow each
/// state, with what weights, and how often a letter is followed by a space.
struct ChainShape {
    /// Per state: (letter, weight) pairs, weights summing to 1.
    letters: Vec<Vec<(u8, f64)>>,
    /// Per letter state: probability of a space given that the document goes on.
    space: Vec<f64>,
}

impl ChainShape {
    fn random(seed: u64) -> ChainShape {
        let mut rng = Pcg64::seed_from_u64(seed);
        let mut letters = Vec::with_capacity(STATES);
        let mut space = vec![0.0; STATES];
        for (state, space_after) in space.iter_mut().enumerate() {
            // A few successors per state keeps the chain learnable yet far from trivial.
            let successors = match state {
                START | SPACE => rng.random_range(6..=10),
                _ => rng.random_range(3..=7),
            };
            letters.push(random_letter_weights(&mut rng, successors));
            if state != START && state != SPACE {
                *space_after = rng.random_range(0.1..0.3);
            }
        }
        ChainShape { letters, space }
    }

    fn with_end(&self, p_end: f64, seed: u64) -> MarkovSource {
        let mut rows = Vec::with_capacity(STATES);
        for state in 0..STATES {
            let is_letter = state != START && state != SPACE;
            let go_on = if is_letter { 1.0 - p_end } else { 1.0 };
            let letter_mass = go_on * (1.0 - self.space[state]);
            let mut row: Vec<Transition> = self.letters[state]
                .iter()
                .map(|&(b, w)| Transition {
                    emit: Emit::Byte(b),
                    probability: letter_mass * w,
                })
                .collect();
            if is_letter {
                row.push(Transition {
                    emit: Emit::Byte(b' '),
                    probability: go_on * self.space[state],
                });
                row.push(Transition {
                    emit: Emit::End,
                    probability: p_end,
                });
            }
            rows.push(row);
        }
        let cumulative = rows
            .iter()
            .map(|row| {
                let mut acc = 0.0;
                row.iter()
                    .map(|t| {
                        acc += t.probability;
                        acc
                    })
                    .collect()
            })
            .collect();
        let bits = rows
            .iter()
            .map(|row| row.iter().map(|t| -t.probability.log2()).collect())
            .collect();
        MarkovSource {
            rows,
            cumulative,
            bits,
            seed,
        }
    }
}

/// `count` distinct letters with Dirichlet(1) weights (normalised exponentials).
fn random_letter_weights(rng: &mut Pcg64, count: usize) -> Vec<(u8, f64)> {
    let mut alphabet: Vec<u8> = (b'a'..=b'z').collect();
    let mut picked = Vec::with_capacity(count);
    for _ in 0..count {
        let i = rng.random_range(0..alphabet.len());
        let weight = -(1.0 - rng.random::<f64>()).ln();
        picked.push((alphabet.swap_remove(i), weight));
    }
    let total: f64 = picked.iter().map(|p| p.1).sum();
    picked.iter_mut().for_each(|p| p.1 /= total);
    picked.sort_by_key(|p| p.0);
    picked
}

/// Solves a small dense system by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .expect("non-empty");
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (done, below) = a.split_at_mut(col + 1);
        let pivot_row = &done[col];
        for (offset, row) in below.iter_mut().enumerate() {
            let factor = row[col] / pivot_row[col];
            if factor != 0.0 {
                row[col..]
                    .iter_mut()
                    .zip(&pivot_row[col..])
                    .for_each(|(x, p)| *x -= factor * p);
                b[col + 1 + offset] -= factor * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_distributions_and_the_mean_length_is_as_asked() {
        let source = MarkovSource::new(7, 300.0).unwrap();
        for (state, row) in source.rows.iter().enumerate() {
            let total: f64 = row.iter().map(|t| t.probability).sum();
            assert!((total - 1.0).abs() < 1e-12, "state {state}: {total}");
        }
        assert!(
            (source.expected_doc_bytes() - 300.0).abs() < 1e-6,
            "{}",
            source.expected_doc_bytes()
        );
        let rate = source.entropy_rate_bpb();
        assert!(rate > 1.0 && rate < 3.5, "{rate}");
    }

    #[test]
    fn documents_are_never_empty_and_spaces_are_single_and_inside() {
        let source = MarkovSource::new(3, 20.0).unwrap();
        for i in 0..3000 {
            let doc = source.sample(i);
            let t = doc.text.as_str();
            assert!(
                !t.is_empty() && !t.starts_with(' ') && !t.ends_with(' ') && !t.contains("  "),
                "doc {i}: {t:?}"
            );
            assert!(t.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
            assert!(doc.bits > 0.0);
        }
    }

    #[test]
    fn same_seed_same_documents_other_seed_other_documents() {
        let a = MarkovSource::new(11, 100.0).unwrap();
        let b = MarkovSource::new(11, 100.0).unwrap();
        let c = MarkovSource::new(12, 100.0).unwrap();
        for i in [0, 1, 999] {
            assert_eq!(a.sample(i).text, b.sample(i).text);
            assert_eq!(a.sample(i).bits, b.sample(i).bits);
        }
        assert_ne!(
            (0..5).map(|i| a.sample(i).text).collect::<Vec<_>>(),
            (0..5).map(|i| c.sample(i).text).collect::<Vec<_>>()
        );
    }

    #[test]
    fn empirical_code_length_matches_the_analytic_rate() {
        // Ratio estimator Σbits/Σbytes over documents; its standard error by the delta method.
        let source = MarkovSource::new(5, 200.0).unwrap();
        let docs: Vec<SampledDoc> = (0..5000).map(|i| source.sample(i)).collect();
        let bytes: f64 = docs.iter().map(|d| d.text.len() as f64).sum();
        let bits: f64 = docs.iter().map(|d| d.bits).sum();
        let empirical = bits / bytes;
        let rate = source.entropy_rate_bpb();
        let residual: f64 = docs
            .iter()
            .map(|d| (d.bits - rate * d.text.len() as f64).powi(2))
            .sum();
        let standard_error = residual.sqrt() / bytes;
        assert!(
            (empirical - rate).abs() < 4.0 * standard_error,
            "empirical {empirical} vs analytic {rate} (se {standard_error})"
        );
        let mean_len = bytes / docs.len() as f64;
        assert!((mean_len - 200.0).abs() < 0.1 * 200.0, "{mean_len}");
    }

    #[test]
    fn bits_are_the_log_probability_of_the_sampled_path() {
        let source = MarkovSource::new(9, 10.0).unwrap();
        let doc = source.sample(42);
        let mut bits = 0.0;
        let mut state = START;
        for b in doc.text.bytes() {
            let t = source.rows[state]
                .iter()
                .find(|t| t.emit == Emit::Byte(b))
                .expect("a transition the chain has");
            bits -= t.probability.log2();
            state = state_after(b);
        }
        bits -= source.end_probability(state).log2();
        assert!((bits - doc.bits).abs() < 1e-9, "{bits} vs {}", doc.bits);
    }

    #[test]
    fn rejects_a_mean_length_out_of_range() {
        assert!(MarkovSource::new(1, 1.0).is_err());
        assert!(MarkovSource::new(1, f64::NAN).is_err());
    }
}
