//! Blocks that most cells express: each gene's cells in each bin as a bitset, and the
//! values as a cells × genes matrix.
//!
//! On such blocks the co-occurrence scan makes about `N` scattered increments per pair.
//! With bitsets, `n_ij(a, b)` is `popcount(cells_ia & cells_jb)`: `bins_i · bins_j · N / 64`
//! word operations that vectorise (AVX-512 `VPOPCNTQ` where the CPU has it, chosen at run
//! time), and the very same integers. Whether that is cheaper depends on the density, the
//! bins and the CPU: [`DensePolicy::Auto`] decides per block from measured costs.

use multiversion::multiversion;

use crate::count::Count;

/// When blocks get bitsets (tiles of two such blocks are counted with them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DensePolicy {
    /// When the cost model says bitsets are cheaper than the co-occurrence scan.
    Auto,
    /// Every block that has a values matrix (for tests).
    Always,
    /// Never (for tests).
    Never,
}

/// Share of expressed entries from which a block keeps its values as a matrix: summing
/// products over every cell (zeros included) then beats picking the co-expressed ones.
pub const DENSE_FILL: f64 = 0.5;

/// Nanoseconds per co-occurrence increment on one core (AMD EPYC, dense tiles).
const INCREMENT_NS: f64 = 0.46;

/// Nanoseconds per 64-bit word of a bitset intersection count on one core, by the best
/// instruction set this CPU has (measured on an AMD EPYC: AVX-512 with `VPOPCNTQ`, AVX2,
/// plain `POPCNT`).
fn word_ns() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vpopcntdq") {
            return 0.13;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return 0.3;
        }
    }
    0.7
}

/// Whether a block of `density` (its share of expressed entries), with up to `stride`
/// nonzero bins per gene, should be counted with bitsets: a tile of two such blocks costs
/// less that way than with the co-occurrence scan.
pub fn bitsets_pay(density: f64, stride: usize, policy: DensePolicy) -> bool {
    match policy {
        DensePolicy::Always => true,
        DensePolicy::Never => false,
        DensePolicy::Auto => {
            let per_cell_bitsets = (stride * stride) as f64 / 64.0 * word_ns();
            let per_cell_scan = density * density * INCREMENT_NS;
            per_cell_bitsets < per_cell_scan
        }
    }
}

/// The dense form of a block of genes.
#[derive(Debug)]
pub struct DenseBlock {
    /// Genes of the block.
    n_genes: usize,
    /// 64-bit words per bitset: `ceil(n_cells / 64)`.
    words: usize,
    /// The slots of each gene, as [`crate::blocks::Block::offsets`]: one bitset per slot.
    offsets: Vec<u16>,
    /// Whether the block has bitsets.
    with_bitsets: bool,
    /// The cells with the gene in column `col` in bin `a`:
    /// `sets[(offsets[col] + a - 1) * words..][..words]`; empty without bitsets.
    sets: Vec<u64>,
    /// Row-major cells × genes, 0 where a gene is not expressed; empty without values.
    pub values: Vec<f64>,
}

/// One entry of a block: its cell, its gene's column, its bin and its value.
pub struct Entry {
    pub cell: usize,
    pub col: usize,
    pub bin: usize,
    pub value: f64,
}

impl DenseBlock {
    /// The dense form of the `entries` of a block of `offsets.len() - 1` genes (gene `col`
    /// with the slots `offsets[col]..offsets[col + 1]`, one per nonzero bin) over
    /// `n_cells` cells: bitsets when `with_bitsets`, values when `with_values`.
    pub fn build(
        entries: impl Iterator<Item = Entry>,
        (n_cells, offsets): (usize, Vec<u16>),
        with_bitsets: bool,
        with_values: bool,
    ) -> Self {
        let n_genes = offsets.len().saturating_sub(1);
        let n_slots = usize::from(*offsets.last().unwrap_or(&0));
        let words = n_cells.div_ceil(64);
        let mut sets = vec![0u64; if with_bitsets { n_slots * words } else { 0 }];
        let mut values = vec![0.0; if with_values { n_cells * n_genes } else { 0 }];
        for entry in entries {
            if with_bitsets {
                let set = (usize::from(offsets[entry.col]) + entry.bin - 1) * words;
                sets[set + entry.cell / 64] |= 1 << (entry.cell % 64);
            }
            if with_values {
                values[entry.cell * n_genes + entry.col] = entry.value;
            }
        }
        DenseBlock {
            n_genes,
            words,
            offsets,
            with_bitsets,
            sets,
            values,
        }
    }

    /// Whether the block has bitsets (its tiles with another such block use them).
    pub fn has_bitsets(&self) -> bool {
        self.with_bitsets
    }

    /// Number of genes (columns of the values matrix).
    pub fn n_genes(&self) -> usize {
        self.n_genes
    }

    /// The bitsets of the gene in column `col`, one per nonzero bin, one after another.
    fn gene_sets(&self, col: usize) -> &[u64] {
        let (first, end) = (self.offsets[col], self.offsets[col + 1]);
        &self.sets[usize::from(first) * self.words..usize::from(end) * self.words]
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        8 * (self.sets.len() + self.values.len()) + 2 * self.offsets.len()
    }
}

/// Writes `n_ij(a, b)` of every pair of a gene `i` of `rows` and a gene `j` of `cols`
/// (`j > i` when they are the same block) to `counts[(off_i + a - 1) * row_len + off_j +
/// b - 1]`, with `off_i`, `off_j` the genes' first slots in their blocks (the layout of a
/// tile's counts). Every count must fit in `T`.
pub fn count_pairs<T: Count>(
    rows: &DenseBlock,
    cols: &DenseBlock,
    same_block: bool,
    counts: &mut [T],
    row_len: usize,
) {
    assert!(rows.with_bitsets && cols.with_bitsets);
    if rows.words == 0 {
        return; // no cell: every count is 0
    }
    for ci in 0..rows.n_genes {
        let first = if same_block { ci + 1 } else { 0 };
        for cj in first..cols.n_genes {
            let sets = (rows.gene_sets(ci), cols.gene_sets(cj));
            if sets.0.is_empty() || sets.1.is_empty() {
                continue; // a gene without a nonzero bin: no count
            }
            let at = usize::from(rows.offsets[ci]) * row_len + usize::from(cols.offsets[cj]);
            pair_counts(sets, rows.words, &mut counts[at..], row_len);
        }
    }
}

/// `counts[(a - 1) * row_len + b - 1] = popcount(xs_a & ys_b)` for the bitsets `xs` of
/// one gene's bins and `ys` of the other's (`words` words each). Compiled for several
/// instruction sets; the best this CPU has is picked at run time.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512vpopcntdq+avx2+popcnt",
    "x86_64+avx2+popcnt",
    "x86_64+popcnt",
))]
fn pair_counts<T: Count>(
    (xs, ys): (&[u64], &[u64]),
    words: usize,
    counts: &mut [T],
    row_len: usize,
) {
    for (a, x) in xs.chunks_exact(words).enumerate() {
        let row = &mut counts[a * row_len..][..ys.len() / words];
        for (count, y) in row.iter_mut().zip(ys.chunks_exact(words)) {
            let n: u32 = x.iter().zip(y).map(|(p, q)| (p & q).count_ones()).sum();
            *count = T::of(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(cells: &[(usize, usize, usize)]) -> impl Iterator<Item = Entry> + '_ {
        cells.iter().map(|&(cell, col, bin)| Entry {
            cell,
            col,
            bin,
            value: (cell * 10 + col) as f64,
        })
    }

    #[test]
    fn bitsets_count_the_cells_of_each_pair_of_bins() {
        // 70 cells (two words); gene 0 has 2 bins, gene 1 has 1.
        let mut cells = Vec::new();
        for cell in 0..70 {
            cells.push((cell, 0, 1 + cell % 2));
            if cell % 3 == 0 {
                cells.push((cell, 1, 1));
            }
        }
        let block = DenseBlock::build(entries(&cells), (70, vec![0, 2, 3]), true, true);
        assert!(block.has_bitsets());
        let row_len = 3;
        let mut counts = vec![0u32; row_len * row_len];
        count_pairs(&block, &block, true, &mut counts, row_len);
        // Pair (0, 1): gene 0 in bin 1 (even cells) or 2 (odd), gene 1 in multiples of 3.
        let even_multiples_of_3 = (0..70).filter(|c| c % 6 == 0).count() as u32;
        let odd_multiples_of_3 = (0..70).filter(|c| c % 3 == 0 && c % 2 == 1).count() as u32;
        assert_eq!(counts[2], even_multiples_of_3);
        assert_eq!(counts[row_len + 2], odd_multiples_of_3);
        // Nothing else is written (pairs j > i only).
        let written = counts.iter().filter(|&&c| c != 0).count();
        assert_eq!(written, 2);
        assert_eq!(block.values[3 * 2 + 1], 31.0);
        assert_eq!(block.values[4 * 2 + 1], 0.0);
    }

    #[test]
    fn no_cells_count_nothing() {
        let block = DenseBlock::build(entries(&[]), (0, vec![0, 3, 5]), true, false);
        let mut counts = vec![0u32; 25];
        count_pairs(&block, &block, false, &mut counts, 5);
        assert!(counts.iter().all(|&c| c == 0));
    }

    #[test]
    fn the_policy_is_a_cost_comparison() {
        assert!(bitsets_pay(0.0, 10, DensePolicy::Always));
        assert!(!bitsets_pay(1.0, 1, DensePolicy::Never));
        // Binary genes that every cell expresses: one word per 64 cells beats 64 increments.
        assert!(bitsets_pay(1.0, 1, DensePolicy::Auto));
        // Many bins on sparse blocks: the scan.
        assert!(!bitsets_pay(0.1, 10, DensePolicy::Auto));
    }
}
