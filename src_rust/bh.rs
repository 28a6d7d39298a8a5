//! Benjamini–Hochberg q-values of the gene pairs of a symmetric matrix of p-values (docs
//! page "How the scores are computed", "q-values of a dense matrix").
//!
//! Each tested pair `i < j` becomes one `u64` sort key: the bits of its `f32` p-value
//! (which, for values `>= 0`, order as the values do) above its flat position `i n + j`.
//! The keys are made in increasing position, so a stable sort by their p-value bits
//! alone, a radix sort of three 10-bit digits, orders them as whole keys; it gives the
//! p-values in increasing order with their positions, and the step-up
//! `q_(k) = min_{j >= k} min(1, m p_(j) / j)` walks them from the largest, writing each
//! q-value at its pair; the lower triangle is then copied from the upper one, tile by
//! tile. Besides the result, memory is the keys and the sort's buffer: 16 bytes per test.

use rayon::prelude::*;

use crate::rows::mirror;

/// The bits of the largest valid p-value; negative values, NaN and values above 1 all
/// have larger bits.
const ONE_BITS: u32 = 0x3F80_0000;

/// The q-values of the pairs `i < j` of the `n × n` row-major `pvalues` that `tested`
/// marks (every pair when `None`), written into `q` (`n × n`) at `(i, j)` and `(j, i)`;
/// every other entry of `q` is set to 1. Runs on the current rayon pool.
pub fn qvalues_of_pairs(
    pvalues: &[f32],
    tested: Option<&[bool]>,
    n: usize,
    q: &mut [f32],
) -> Result<(), String> {
    if pvalues.len() != n * n || q.len() != n * n || tested.is_some_and(|t| t.len() != n * n) {
        return Err(format!(
            "the p-values, the tested pairs and q must be {n} × {n}"
        ));
    }
    if (n * n) as u64 > 1 << 32 {
        return Err(format!(
            "{n} genes are too many for a dense matrix of q-values"
        ));
    }
    let keys = sort_keys(pvalues, tested, n);
    let histogram = Histogram::of(&keys);
    if histogram.largest > ONE_BITS {
        return Err("p-values must lie in [0, 1] (no NaN)".into());
    }
    let keys = sort_by_pvalue(keys, &histogram.counts);
    q.par_iter_mut().for_each(|value| *value = 1.0);
    step_up(&keys, n, q);
    Ok(())
}

/// One key per tested pair `i < j`, row by row: p-value bits, then position.
fn sort_keys(pvalues: &[f32], tested: Option<&[bool]>, n: usize) -> Vec<u64> {
    (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let row = i * n;
            (i + 1..n)
                .filter(move |&j| tested.is_none_or(|t| t[row + j]))
                .map(move |j| {
                    // `+ 0.0` turns -0.0 (sign bit set, so above ONE_BITS) into 0.0.
                    let bits = (pvalues[row + j] + 0.0).to_bits();
                    (u64::from(bits) << 32) | (row + j) as u64
                })
        })
        .collect()
}

/// Bits of a radix digit (10 were faster than 8, 11 or 15 on 2,000,000 keys).
const DIGIT_BITS: usize = 10;
/// Buckets of a digit.
const RADIX: usize = 1 << DIGIT_BITS;
/// Digits of the bits of a p-value in `[0, 1]`, all below `2^30` (`ONE_BITS` is).
const DIGITS: usize = 3;

/// Digit `d` (from the least significant) of a key's p-value bits.
fn digit(key: u64, d: usize) -> usize {
    ((key >> (32 + d * DIGIT_BITS)) as usize) & (RADIX - 1)
}

/// `keys` (whose p-value bits are at most `ONE_BITS`) sorted stably by their p-value bits,
/// whose digits' counts are `counts`: a least-significant-digit radix sort.
fn sort_by_pvalue(mut keys: Vec<u64>, counts: &[[usize; RADIX]]) -> Vec<u64> {
    let mut buffer = vec![0u64; keys.len()];
    for (d, count) in counts.iter().enumerate() {
        if count.contains(&keys.len()) {
            continue; // every key has this digit: the pass would change nothing
        }
        scatter(&keys, &mut buffer, d, count);
        std::mem::swap(&mut keys, &mut buffer);
    }
    keys
}

/// What one read of the keys tells: how many have each value of each digit, and the
/// largest p-value bits (which show whether every p-value lies in `[0, 1]`).
struct Histogram {
    counts: Vec<[usize; RADIX]>,
    largest: u32,
}

impl Histogram {
    /// The histogram of `keys`, counted on the current rayon pool.
    fn of(keys: &[u64]) -> Self {
        let empty = || Histogram {
            counts: vec![[0usize; RADIX]; DIGITS],
            largest: 0,
        };
        keys.par_chunks(1 << 16)
            .fold(empty, |mut histogram, chunk| {
                for &key in chunk {
                    for (d, count) in histogram.counts.iter_mut().enumerate() {
                        count[digit(key, d)] += 1;
                    }
                    histogram.largest = histogram.largest.max((key >> 32) as u32);
                }
                histogram
            })
            .reduce(empty, |mut total, part| {
                for (total, part) in total.counts.iter_mut().zip(&part.counts) {
                    total.iter_mut().zip(part).for_each(|(t, c)| *t += c);
                }
                total.largest = total.largest.max(part.largest);
                total
            })
    }
}

/// `source` placed into `target` in the order of digit `d` (stably), whose bucket sizes
/// are `count`. (One thread: with two, each reading every key and placing those of its
/// buckets, it was slower, the pass being bound by memory.)
fn scatter(source: &[u64], target: &mut [u64], d: usize, count: &[usize; RADIX]) {
    let mut next = 0;
    let mut starts = count.map(|c| {
        next += c;
        next - c
    });
    for &key in source {
        let bucket = &mut starts[digit(key, d)];
        target[*bucket] = key;
        *bucket += 1;
    }
}

/// The step-up over the sorted keys, from the largest p-value down: the q-value of rank
/// `k` (1-based) is `min(running, m p / k)` in `f64`, stored as `f32` at the pair, then
/// copied to its mirror. Tied p-values thereby share the q-value of the last of them.
fn step_up(keys: &[u64], n: usize, q: &mut [f32]) {
    let n_tests = keys.len() as f64;
    let mut running = 1.0f64;
    for (rank, &key) in keys.iter().enumerate().rev() {
        let p = f64::from(f32::from_bits((key >> 32) as u32));
        running = running.min(p * n_tests / (rank + 1) as f64);
        q[(key & 0xFFFF_FFFF) as usize] = running as f32;
    }
    mirror(q, n, n, 1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BH by its definition: `q_(k) = min_{j >= k} min(1, m p_(j) / j)`.
    fn by_definition(p: &[f64]) -> Vec<f64> {
        let m = p.len() as f64;
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
        let mut q = vec![0.0; p.len()];
        for (k, &at) in order.iter().enumerate() {
            q[at] = order[k..]
                .iter()
                .enumerate()
                .map(|(offset, &other)| (m * p[other] / (k + offset + 1) as f64).min(1.0))
                .fold(1.0, f64::min);
        }
        q
    }

    #[test]
    fn matrix_of_pairs_follows_the_definition() {
        let n = 5;
        let mut p = vec![0.0f32; n * n];
        let values = [0.01f32, 0.2, 0.03, 0.03, 0.5, 0.04, 0.9, 0.0, 0.03, 1.0];
        let mut upper = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let value = values[upper.len()];
                (p[i * n + j], p[j * n + i]) = (value, value);
                upper.push((i, j));
            }
        }
        let mut q = vec![0.0f32; n * n];
        qvalues_of_pairs(&p, None, n, &mut q).unwrap();
        let expected = by_definition(&values.map(f64::from));
        for (&(i, j), &want) in upper.iter().zip(&expected) {
            assert!((f64::from(q[i * n + j]) - want).abs() < 1e-7, "({i}, {j})");
            assert_eq!(q[i * n + j], q[j * n + i]);
        }
        assert!((0..n).all(|i| q[i * n + i] == 1.0));
    }

    #[test]
    fn untested_pairs_get_one_and_are_not_counted() {
        let n = 3;
        let p = vec![0.0, 0.01, 0.02, 0.01, 0.0, 0.04, 0.02, 0.04, 0.0];
        let mut tested = vec![true; n * n];
        (tested[1], tested[3]) = (false, false);
        let mut q = vec![0.0f32; n * n];
        qvalues_of_pairs(&p, Some(&tested), n, &mut q).unwrap();
        assert_eq!((q[1], q[3]), (1.0, 1.0));
        let expected = by_definition(&[0.02, 0.04]);
        assert!((f64::from(q[2]) - expected[0]).abs() < 1e-8);
        assert!((f64::from(q[5]) - expected[1]).abs() < 1e-8);
    }

    #[test]
    fn the_radix_sort_orders_whole_keys_made_in_increasing_position() {
        let mut next = crate::binned::testing::xorshift(11);
        let p_bits = [0u32, 1, 0x0080_0000, 0x3A00_0001, 0x3F7F_0000, 0x3F7F_FFFF];
        let keys: Vec<u64> = (0..5000u64)
            .map(|position| {
                let bits = p_bits[(next() % 6) as usize] ^ ((next() % 3) as u32) << 11;
                (u64::from(bits) << 32) | position
            })
            .collect();
        let mut expected = keys.clone();
        expected.sort_unstable();
        for threads in [1, 2, 3, 7] {
            let histogram = crate::pool::install(threads, || Histogram::of(&keys)).unwrap();
            let largest = keys.iter().map(|&key| (key >> 32) as u32).max();
            assert_eq!(Some(histogram.largest), largest, "{threads} threads");
            assert_eq!(sort_by_pvalue(keys.clone(), &histogram.counts), expected);
        }
        assert!(sort_by_pvalue(Vec::new(), &Histogram::of(&[]).counts).is_empty());
    }

    #[test]
    fn bad_pvalues_and_shapes_are_errors() {
        let mut q = vec![0.0f32; 4];
        for bad in [f32::NAN, -0.5, 1.5, f32::INFINITY] {
            assert!(qvalues_of_pairs(&[0.0, bad, bad, 0.0], None, 2, &mut q).is_err());
        }
        assert!(qvalues_of_pairs(&[0.0, -0.0, -0.0, 0.0], None, 2, &mut q).is_ok());
        assert!(qvalues_of_pairs(&[0.0; 3], None, 2, &mut q).is_err());
    }
}
