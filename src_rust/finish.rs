//! The fused finish: each pair's integer co-occurrence counts turned at once into its
//! stored scores (the MI under the scoring choice, signed, and with a test the
//! Williams-corrected G statistic and its degrees of freedom).
//!
//! Every backend performs the same `float64` operations in the same order (the docs page
//! "How the scores are computed", sections "The fused finish", "Signs" and "The G-test"),
//! so that all give the same bits. The per-gene tables are read from the input, made once
//! in binning; a quantity of one gene that the sequence computes the same way for every
//! pair (`N * norm_g`, `xlogx[N - z_g] + bins_xlogx[g]`, `N * full_inverse[g] - 1.0`) is
//! computed once per gene here, which gives the same bits.

use std::f64::consts::LN_2;

use crate::binned::{Binned, MAX_BINS};
use crate::count::Count;

/// What the finish turns each pair's counts into (`geneverse.kernels.Scoring`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scoring {
    /// Multiply the MI by the sign of the pair's Pearson correlation.
    pub signed: bool,
    /// Count the cells where both genes are zero (the MI over all cells).
    pub include_zeros: bool,
    /// Add the Miller–Madow correction to each entropy term.
    pub miller_madow: bool,
    /// Also give the G statistic of the full table and its degrees of freedom.
    pub g_test: bool,
    /// A sign counts only when `|cov|` exceeds this share of its rounding error bound.
    pub sign_tolerance: f64,
}

impl Scoring {
    /// GeneVector's score: signed plug-in MI over the cells expressing either gene.
    pub fn default_score(sign_tolerance: f64) -> Self {
        Scoring {
            signed: true,
            include_zeros: false,
            miller_madow: false,
            g_test: false,
            sign_tolerance,
        }
    }
}

/// The stored scores of one pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairScores {
    /// The MI in bits under the scoring choice (signed when it is), never `-0.0`.
    pub mi: f32,
    /// The Williams-corrected G statistic (0 without a test, or where `dof` is 0).
    pub statistic: f64,
    /// The degrees of freedom of the full table (0 without a test).
    pub dof: i32,
}

/// What the finish needs of one gene.
#[derive(Clone, Copy, Debug)]
struct Gene {
    /// Where its nonzero bin counts start in [`GeneTables::bin_counts`].
    counts_at: usize,
    /// Its nonzero bins, `K_g = n_bins[g] - 1`.
    bins: usize,
    /// `z_g`.
    expressed: u32,
    /// `occupied[g]`.
    occupied: i64,
    /// `bins_xlogx[g]`.
    bins_xlogx: f64,
    /// `levels[g] = occupied[g] + (z_g < N)`.
    levels: i64,
    /// `xlogx[N - z_g] + bins_xlogx[g]`: the margin term of the full table.
    full_margin: f64,
    /// `N * full_inverse[g] - 1.0`: the gene's factor of Williams' `q`.
    williams: f64,
    varies: bool,
    value_sum: f64,
    value_norm: f64,
    /// `N * value_norms[g]`.
    scaled_norm: f64,
}

/// The per-gene tables of the finish, owned (copied from the input once per kernel).
#[derive(Debug)]
pub struct GeneTables {
    n_cells: u32,
    genes: Vec<Gene>,
    /// Every gene's nonzero bin counts `n_g(1..=K_g)`, one gene after another.
    bin_counts: Vec<u32>,
    /// `xlogx[m] = m * log2(m)`, `m = 0..=N`.
    xlogx: Vec<f64>,
    /// `log2[m]`, `m = 0..=N`.
    log2: Vec<f64>,
}

impl GeneTables {
    /// The tables of `binned` (its shapes checked).
    pub fn new(binned: &Binned<'_>) -> Self {
        let n_cells = binned.n_cells();
        let n = n_cells as f64;
        let xlogx = binned.xlogx[..=n_cells].to_vec();
        let log2 = binned.log2[..=n_cells].to_vec();
        let mut bin_counts = Vec::new();
        let genes = (0..binned.n_genes())
            .map(|g| {
                let counts = binned.nonzero_bin_counts(g);
                let counts_at = bin_counts.len();
                bin_counts.extend(counts.iter().map(|&c| c as u32));
                let expressed = binned.expressed[g];
                let unexpressed = n_cells - expressed as usize;
                Gene {
                    counts_at,
                    bins: counts.len(),
                    expressed: expressed as u32,
                    occupied: binned.occupied[g],
                    bins_xlogx: binned.bins_xlogx[g],
                    levels: binned.occupied[g] + i64::from(unexpressed > 0),
                    full_margin: xlogx[unexpressed] + binned.bins_xlogx[g],
                    williams: n * binned.full_inverse[g] - 1.0,
                    varies: binned.varies[g],
                    value_sum: binned.value_sums[g],
                    value_norm: binned.value_norms[g],
                    scaled_norm: n * binned.value_norms[g],
                }
            })
            .collect();
        GeneTables {
            n_cells: n_cells as u32,
            genes,
            bin_counts,
            xlogx,
            log2,
        }
    }

    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.genes.len()
    }

    /// Number of nonzero bins of gene `gene`.
    pub fn nonzero_bins(&self, gene: usize) -> usize {
        self.genes[gene].bins
    }

    /// `n_g(1..=K_g)` of gene `gene`.
    fn bin_counts(&self, gene: &Gene) -> &[u32] {
        &self.bin_counts[gene.counts_at..gene.counts_at + gene.bins]
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        std::mem::size_of::<Gene>() * self.genes.len()
            + 4 * self.bin_counts.len()
            + 8 * (self.xlogx.len() + self.log2.len())
    }
}

/// The co-occurrence counts `n_ij(a, b)` of one pair, `a, b >= 1`, inside a larger buffer:
/// `n_ij(a + 1, b + 1) = data[a * row_stride + b]`.
#[derive(Clone, Copy, Debug)]
pub struct JointCounts<'a, T = u32> {
    pub data: &'a [T],
    pub row_stride: usize,
}

impl<'a, T> JointCounts<'a, T> {
    /// Counts of nonzero bin `a + 1` of the row gene against the first `n_cols` nonzero bins
    /// of the column gene.
    fn row(&self, a: usize, n_cols: usize) -> &'a [T] {
        &self.data[a * self.row_stride..a * self.row_stride + n_cols]
    }
}

/// `max(x, 0.0)` as NumPy's `maximum` computes it (`x` when `x >= 0` or NaN).
fn at_least_zero(x: f64) -> f64 {
    if x >= 0.0 || x.is_nan() {
        x
    } else {
        0.0
    }
}

/// The sums of one pair's table: `S`, the cells expressing both (`c`), and the nonzero
/// cells `m` (counted only when asked for).
struct Table {
    s: f64,
    both: u32,
    nonzero: i64,
}

impl Table {
    /// Adds the row of the row gene's bin `a` (`n_a` cells), whose counts against the
    /// column gene's bins are `row`: `S += t + xlogx[u]`, `t` its counts' terms from 0.0,
    /// `u = n_a - r_a` its cells without the column gene. Adds the counts to `col_sums`
    /// (sets them on the `FIRST` row).
    #[inline(always)]
    fn add_row<const NONZERO: bool, T: Count, const FIRST: bool>(
        &mut self,
        xlogx: &[f64],
        n_a: u32,
        row: &[T],
        col_sums: &mut [u32],
    ) {
        let mut row_xlogx = 0.0;
        let mut row_sum = 0u32;
        for (&count, col_sum) in row.iter().zip(col_sums.iter_mut()) {
            let count = count.get();
            row_xlogx += xlogx[count as usize];
            row_sum += count;
            if FIRST {
                *col_sum = count;
            } else {
                *col_sum += count;
            }
            if NONZERO {
                self.nonzero += i64::from(count > 0);
            }
        }
        let only_row = n_a - row_sum;
        self.s += row_xlogx + xlogx[only_row as usize];
        if NONZERO {
            self.nonzero += i64::from(only_row > 0);
        }
        self.both += row_sum;
    }
}

/// Finishes pairs; holds the one scratch buffer that needs, so it is made once per thread.
pub struct PairFinisher<'a> {
    tables: &'a GeneTables,
    scoring: Scoring,
    /// `k_b`, the column sums of the pair's counts.
    col_sums: Vec<u32>,
}

impl<'a> PairFinisher<'a> {
    /// A finisher of pairs of the genes of `tables` under `scoring`.
    pub fn new(tables: &'a GeneTables, scoring: Scoring) -> Self {
        PairFinisher {
            tables,
            scoring,
            col_sums: vec![0; MAX_BINS],
        }
    }

    /// The scores of genes `i` (rows of `joint`) and `j != i` (columns), whose sign values'
    /// products summed over the cells expressing both are `products`.
    pub fn finish<T: Count>(
        &mut self,
        joint: JointCounts<'_, T>,
        (i, j): (usize, usize),
        products: f64,
    ) -> PairScores {
        let t = self.tables;
        let scoring = self.scoring;
        let (gene_i, gene_j) = (&t.genes[i], &t.genes[j]);
        let table = if scoring.miller_madow {
            self.table::<true, T>(joint, gene_i, gene_j)
        } else {
            self.table::<false, T>(joint, gene_i, gene_j)
        };
        let xlogx = &t.xlogx;
        let n_cells = t.n_cells;
        let either = gene_i.expressed + gene_j.expressed - table.both;
        let neither = n_cells - either;
        let (total, s, nonzero) = if scoring.include_zeros {
            let nonzero = table.nonzero + i64::from(neither > 0);
            (n_cells, table.s + xlogx[neither as usize], nonzero)
        } else {
            (either, table.s, table.nonzero)
        };
        let mut mi = 0.0;
        if total > 0 {
            let (y_i, y_j) = (total - gene_i.expressed, total - gene_j.expressed);
            let s_i = xlogx[y_i as usize] + gene_i.bins_xlogx;
            let s_j = xlogx[y_j as usize] + gene_j.bins_xlogx;
            let total_f = f64::from(total);
            mi = t.log2[total as usize] + ((s - s_i) - s_j) / total_f;
            if scoring.miller_madow {
                let m_i = gene_i.occupied + i64::from(y_i > 0);
                let m_j = gene_j.occupied + i64::from(y_j > 0);
                mi += (m_i + m_j - nonzero - 1) as f64 / ((2.0 * total_f) * LN_2);
            }
            mi = at_least_zero(mi);
        }
        if scoring.signed && mi > 0.0 {
            mi = self.signed(mi, gene_i, gene_j, products);
        }
        let mut scores = PairScores {
            mi: (mi + 0.0) as f32,
            statistic: 0.0,
            dof: 0,
        };
        if scoring.g_test {
            let s_full = if scoring.include_zeros {
                s
            } else {
                s + xlogx[neither as usize]
            };
            (scores.statistic, scores.dof) = self.g_test(s_full, gene_i, gene_j);
        }
        scores
    }

    /// `S`, `c` and (with `NONZERO`) `m` of the pair's table over the cells expressing
    /// either gene, in the docs' order: row by row, each row's sum `t` from 0.0 and then
    /// `S += t + xlogx[u]`; then the column-only cells.
    #[inline(always)]
    fn table<const NONZERO: bool, T: Count>(
        &mut self,
        joint: JointCounts<'_, T>,
        gene_i: &Gene,
        gene_j: &Gene,
    ) -> Table {
        let t = self.tables;
        let n_cols = gene_j.bins;
        let col_sums = &mut self.col_sums[..n_cols];
        let mut table = Table {
            s: 0.0,
            both: 0,
            nonzero: 0,
        };
        let rows = t.bin_counts(gene_i);
        if let Some((&n_1, rest)) = rows.split_first() {
            // The first row sets the column sums, the others add to them.
            let row = joint.row(0, n_cols);
            table.add_row::<NONZERO, T, true>(&t.xlogx, n_1, row, col_sums);
            for (a, &n_a) in rest.iter().enumerate() {
                let row = joint.row(a + 1, n_cols);
                table.add_row::<NONZERO, T, false>(&t.xlogx, n_a, row, col_sums);
            }
        } else {
            col_sums.fill(0);
        }
        for (&n_b, &col_sum) in t.bin_counts(gene_j).iter().zip(col_sums.iter()) {
            let only_col = n_b - col_sum;
            table.s += t.xlogx[only_col as usize];
            if NONZERO {
                table.nonzero += i64::from(only_col > 0);
            }
        }
        table
    }

    /// `mi > 0` kept, negated, or 0, by the sign of the pair's covariance and its error
    /// bound.
    fn signed(&self, mi: f64, gene_i: &Gene, gene_j: &Gene, products: f64) -> f64 {
        if !(gene_i.varies && gene_j.varies) {
            return 0.0;
        }
        let n = f64::from(self.tables.n_cells);
        let sums = gene_i.value_sum * gene_j.value_sum;
        let covariance = n * products - sums;
        let bound =
            self.scoring.sign_tolerance * (gene_i.scaled_norm * gene_j.value_norm + sums.abs());
        if covariance.abs() > bound {
            if covariance < 0.0 {
                -mi
            } else {
                mi
            }
        } else {
            0.0
        }
    }

    /// The Williams-corrected G statistic of the full table whose `S` is `s_full`, and its
    /// degrees of freedom.
    fn g_test(&self, s_full: f64, gene_i: &Gene, gene_j: &Gene) -> (f64, i32) {
        let t = self.tables;
        let n_cells = t.n_cells;
        let n = f64::from(n_cells);
        let mut g = 0.0;
        if n_cells > 0 {
            g = t.log2[n_cells as usize] + ((s_full - gene_i.full_margin) - gene_j.full_margin) / n;
        }
        let g = at_least_zero(g) * ((2.0 * n) * LN_2);
        let dof = (gene_i.levels - 1) * (gene_j.levels - 1);
        if dof <= 0 {
            return (0.0, dof as i32);
        }
        let q = 1.0 + (gene_i.williams * gene_j.williams) / ((6.0 * n) * dof as f64);
        (g / q, dof as i32)
    }
}

#[cfg(test)]
pub(crate) mod reference {
    //! The definition written directly, from a pair's full joint histogram (all cells,
    //! the zero bins included): entropies, MI, and the textbook G-test, for the tests.

    /// Plug-in entropy in bits of `counts`, plus `(m - 1) / (2 n ln 2)` for Miller–Madow.
    fn entropy(counts: &[u64], miller_madow: bool) -> f64 {
        let n = counts.iter().sum::<u64>() as f64;
        let mut h = 0.0;
        for &c in counts.iter().filter(|&&c| c > 0) {
            let p = c as f64 / n;
            h -= p * p.log2();
        }
        if miller_madow {
            let m = counts.iter().filter(|&&c| c > 0).count() as f64;
            h += (m - 1.0) / (2.0 * n * std::f64::consts::LN_2);
        }
        h
    }

    /// `H(A) + H(B) - H(A, B)` of the table over all cells (`include_zeros`) or over the
    /// cells expressing either gene, clipped at 0; 0 for an empty table.
    pub fn histogram_mi(joint: &[Vec<u64>], include_zeros: bool, miller_madow: bool) -> f64 {
        let mut table: Vec<Vec<u64>> = joint.to_vec();
        if !include_zeros {
            table[0][0] = 0;
        }
        let cells: Vec<u64> = table.iter().flatten().copied().collect();
        if cells.iter().sum::<u64>() == 0 {
            return 0.0;
        }
        let rows: Vec<u64> = table.iter().map(|r| r.iter().sum()).collect();
        let cols: Vec<u64> = (0..table[0].len())
            .map(|b| table.iter().map(|r| r[b]).sum())
            .collect();
        let mi = entropy(&rows, miller_madow) + entropy(&cols, miller_madow)
            - entropy(&cells, miller_madow);
        mi.max(0.0)
    }

    /// Williams-corrected G statistic of the full table and its degrees of freedom
    /// (statistic 0 when they are 0).
    pub fn g_test(joint: &[Vec<u64>]) -> (f64, i32) {
        let n = joint.iter().flatten().sum::<u64>() as f64;
        let rows: Vec<f64> = joint.iter().map(|r| r.iter().sum::<u64>() as f64).collect();
        let cols: Vec<f64> = (0..joint[0].len())
            .map(|b| joint.iter().map(|r| r[b]).sum::<u64>() as f64)
            .collect();
        let mut g = 0.0;
        for (a, row) in joint.iter().enumerate() {
            for (b, &o) in row.iter().enumerate().filter(|(_, &o)| o > 0) {
                let expected = rows[a] * cols[b] / n;
                g += 2.0 * o as f64 * (o as f64 / expected).ln();
            }
        }
        let (rows, cols): (Vec<f64>, Vec<f64>) = (
            rows.into_iter().filter(|&r| r > 0.0).collect(),
            cols.into_iter().filter(|&c| c > 0.0).collect(),
        );
        let dof = (rows.len() as i32 - 1) * (cols.len() as i32 - 1);
        if dof == 0 {
            return (0.0, 0);
        }
        let inverse = |margins: &[f64]| margins.iter().map(|m| 1.0 / m).sum::<f64>();
        let q = 1.0
            + (n * inverse(&rows) - 1.0) * (n * inverse(&cols) - 1.0) / (6.0 * n * f64::from(dof));
        (g.max(0.0) / q, dof)
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{g_test, histogram_mi};
    use super::*;
    use crate::binned::testing::OwnedBinned;

    /// Every scoring choice, unsigned and signed.
    pub(crate) fn every_scoring() -> Vec<Scoring> {
        (0..16)
            .map(|k| Scoring {
                signed: k & 1 != 0,
                include_zeros: k & 2 != 0,
                miller_madow: k & 4 != 0,
                g_test: k & 8 != 0,
                sign_tolerance: 2f64.powi(-32),
            })
            .collect()
    }

    /// Cells realising the full joint histogram `joint` of genes 0 and 1 (bin 0: not
    /// expressed), with the values `values(a, b)` of each cell's two genes.
    fn cells_of(
        joint: &[Vec<u64>],
        values: impl Fn(usize, usize, u64) -> (f64, f64),
    ) -> OwnedBinned {
        let (mut bins, mut xs) = (Vec::new(), Vec::new());
        for (a, row) in joint.iter().enumerate() {
            for (b, &count) in row.iter().enumerate() {
                for k in 0..count {
                    bins.push(vec![a as u8, b as u8]);
                    let (x, y) = values(a, b, k);
                    xs.push(vec![
                        if a > 0 { x } else { 0.0 },
                        if b > 0 { y } else { 0.0 },
                    ]);
                }
            }
        }
        let n_bins = [joint.len() as i32, joint[0].len() as i32];
        OwnedBinned::from_dense(&bins, &xs, &n_bins)
    }

    /// The scores of genes 0 and 1 of `owned` through the finish, with the nonzero counts
    /// of `joint` and the products of the values.
    fn finish_pair(owned: &OwnedBinned, joint: &[Vec<u64>], scoring: Scoring) -> PairScores {
        let nonzero: Vec<u32> = joint[1..]
            .iter()
            .flat_map(|r| r[1..].iter().map(|&c| c as u32))
            .collect();
        let binned = owned.view();
        assert_eq!(binned.check_shapes(), Ok(()));
        assert_eq!(binned.check_entries(), Ok(()));
        let mut products = 0.0;
        for cell in 0..binned.n_cells() {
            let entries = binned.cell_entries(cell);
            if entries.len() == 2 {
                products += binned.values[entries.start] * binned.values[entries.start + 1];
            }
        }
        let tables = GeneTables::new(&binned);
        let joint = JointCounts {
            data: &nonzero,
            row_stride: joint[0].len() - 1,
        };
        PairFinisher::new(&tables, scoring).finish(joint, (0, 1), products)
    }

    fn histograms() -> Vec<Vec<Vec<u64>>> {
        vec![
            vec![vec![0, 3, 1], vec![2, 5, 0], vec![4, 0, 7]],
            vec![vec![9, 3, 1], vec![2, 5, 0], vec![4, 0, 7]],
            vec![vec![0, 10], vec![10, 0]],
            vec![vec![5, 10], vec![10, 0]],
            vec![vec![0, 0, 0], vec![0, 4, 0], vec![0, 0, 6]],
            vec![vec![3, 2, 2, 1], vec![3, 1, 1, 0], vec![0, 0, 9, 2]],
            vec![vec![0, 0], vec![0, 12]],
            vec![vec![7, 0], vec![0, 0]],
            vec![vec![4], vec![6], vec![1]],
            vec![vec![0, 0, 0], vec![0, 0, 0]],
        ]
    }

    #[test]
    fn finish_equals_the_histogram_definition_for_every_scoring() {
        for joint in histograms() {
            let owned = cells_of(&joint, |a, b, _| (a as f64, b as f64));
            for scoring in every_scoring().into_iter().filter(|s| !s.signed) {
                let got = finish_pair(&owned, &joint, scoring);
                let expected = histogram_mi(&joint, scoring.include_zeros, scoring.miller_madow);
                assert!(
                    (f64::from(got.mi) - expected).abs() < 1e-6,
                    "{joint:?} {scoring:?}: {} != {expected}",
                    got.mi
                );
                if scoring.g_test {
                    let (statistic, dof) = g_test(&joint);
                    assert_eq!(got.dof, dof, "{joint:?}");
                    assert!(
                        (got.statistic - statistic).abs() <= 1e-9 * statistic.max(1.0),
                        "{joint:?}: {} != {statistic}",
                        got.statistic
                    );
                } else {
                    assert_eq!((got.statistic, got.dof), (0.0, 0));
                }
            }
        }
    }

    #[test]
    fn independent_genes_give_zero() {
        // Bins of i and j independent over the counted cells: MI is 0 (up to rounding).
        let joint = vec![vec![0, 0, 0], vec![0, 2, 4], vec![0, 4, 8]];
        let owned = cells_of(&joint, |a, b, _| (a as f64, b as f64));
        let got = finish_pair(&owned, &joint, Scoring::default_score(0.0));
        assert!(got.mi.abs() < 1e-6 && got.mi.to_bits() != (-0.0f32).to_bits());
    }

    #[test]
    fn signs_follow_the_covariance_and_its_error_bound() {
        let joint = vec![vec![2, 3, 1], vec![2, 5, 1], vec![1, 2, 7]];
        let mi = histogram_mi(&joint, false, false) as f32;
        let sign = |values: &dyn Fn(usize, usize, u64) -> (f64, f64), tolerance: f64| {
            let owned = cells_of(&joint, values);
            let scoring = Scoring::default_score(tolerance);
            let got = finish_pair(&owned, &joint, scoring).mi;
            assert!(got == 0.0 || (got.abs() - mi).abs() < 1e-6, "{got} {mi}");
            assert_ne!(got.to_bits(), (-0.0f32).to_bits());
            got.signum() * f32::from(got != 0.0)
        };
        // Values rising with the bins: positive; falling: negative.
        assert_eq!(sign(&|a, b, _| (a as f64, b as f64), 2f64.powi(-32)), 1.0);
        assert_eq!(
            sign(&|a, b, _| (a as f64, -(b as f64)), 2f64.powi(-32)),
            -1.0
        );
        // A correlation within its error bound is 0 (here the bound is made huge).
        assert_eq!(sign(&|a, b, _| (a as f64, b as f64), 1.0), 0.0);
        // A gene marked constant has no sign.
        let mut owned = cells_of(&joint, |a, b, _| (a as f64, b as f64));
        owned.varies[1] = false;
        let got = finish_pair(&owned, &joint, Scoring::default_score(0.0));
        assert_eq!(got.mi.to_bits(), 0.0f32.to_bits());
    }
}
