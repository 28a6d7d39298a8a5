//! The MI finish (DESIGN.md §3): mutual information of one pair from its integer
//! co-occurrence counts, the genes' bin counts and the shared `m log2 m` table, and the
//! sign of the pair's Pearson correlation.

use crate::binned::Binned;

/// The partner-independent part of a gene's MI terms.
#[derive(Clone, Copy, Debug)]
pub struct GeneMarginal<'a> {
    /// `n_g(a)` for the nonzero bins `a = 1..n_bins[g]`.
    pub bin_counts: &'a [i64],
    /// `z_g`: cells expressing the gene.
    pub expressed: i64,
    /// `sum_a xlogx[n_g(a)]`.
    pub bins_xlogx: f64,
}

/// The per-gene tables of the finish, owned (copied from the input once per kernel).
#[derive(Debug)]
pub struct GeneTables {
    n_cells: usize,
    max_bins: usize,
    n_bins: Vec<i32>,
    /// Row-major `(n_genes, max_bins)`.
    bin_counts: Vec<i64>,
    expressed: Vec<i64>,
    bins_xlogx: Vec<f64>,
    value_sums: Vec<f64>,
    /// `sum_c x_gc²`, added in increasing cell order.
    sums_of_squares: Vec<f64>,
    varies: Vec<bool>,
    /// `xlogx[m] = m * log2(m)`, the one table MI is finished with.
    pub xlogx: Vec<f64>,
}

impl GeneTables {
    /// The tables of `binned` (checked).
    pub fn new(binned: &Binned<'_>) -> Self {
        let n_genes = binned.n_genes();
        let xlogx = binned.xlogx[..=binned.n_cells()].to_vec();
        let marginal = |g: usize| -> (i64, f64) {
            let counts = binned.nonzero_bin_counts(g);
            (
                counts.iter().sum(),
                counts.iter().map(|&n| xlogx[n as usize]).sum(),
            )
        };
        let (expressed, bins_xlogx) = (0..n_genes).map(marginal).unzip();
        let mut sums_of_squares = vec![0.0; n_genes];
        for (&gene, &x) in binned.genes.iter().zip(binned.values) {
            sums_of_squares[gene as usize] += x * x;
        }
        GeneTables {
            n_cells: binned.n_cells(),
            max_bins: binned.max_bins,
            n_bins: binned.n_bins.to_vec(),
            bin_counts: binned.bin_counts.to_vec(),
            expressed,
            bins_xlogx,
            value_sums: binned.value_sums.to_vec(),
            sums_of_squares,
            varies: binned.varies.to_vec(),
            xlogx,
        }
    }

    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.n_bins.len()
    }

    /// Number of nonzero bins of gene `gene`.
    pub fn nonzero_bins(&self, gene: usize) -> usize {
        self.n_bins[gene] as usize - 1
    }

    /// The marginal of gene `gene`.
    pub fn marginal(&self, gene: usize) -> GeneMarginal<'_> {
        let row = gene * self.max_bins;
        GeneMarginal {
            bin_counts: &self.bin_counts[row + 1..row + 1 + self.nonzero_bins(gene)],
            expressed: self.expressed[gene],
            bins_xlogx: self.bins_xlogx[gene],
        }
    }

    /// Sign of the Pearson correlation of genes `i` and `j`, whose sum of products over
    /// the cells is `products`; 0 when undefined.
    pub fn correlation_sign(&self, i: usize, j: usize, products: f64) -> f64 {
        let sums = (self.value_sums[i], self.value_sums[j]);
        correlation_sign(
            products,
            self.n_cells,
            sums,
            self.varies[i] && self.varies[j],
        )
    }

    /// `sum_c x_gc²` of gene `gene` (its sum of products with itself).
    pub fn sum_of_squares(&self, gene: usize) -> f64 {
        self.sums_of_squares[gene]
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        4 * self.n_bins.len()
            + 8 * (self.bin_counts.len() + self.expressed.len() + self.bins_xlogx.len())
            + 17 * self.value_sums.len()
            + 8 * self.xlogx.len()
    }
}

/// A count of cells: `u32` in the kernel's own tiles, `i64` in count blocks from Python.
pub trait Count: Copy + Into<i64> {}
impl Count for u32 {}
impl Count for i64 {}

/// The co-occurrence counts `n_ij(a, b)` of one pair, `a, b >= 1`, inside a larger buffer:
/// `n_ij(a + 1, b + 1) = data[a * row_stride + b]`.
#[derive(Clone, Copy, Debug)]
pub struct JointCounts<'a, C> {
    pub data: &'a [C],
    pub row_stride: usize,
}

impl<'a, C: Count> JointCounts<'a, C> {
    /// Counts of nonzero bin `a + 1` of the row gene against the first `n_cols` nonzero bins
    /// of the column gene.
    fn row(&self, a: usize, n_cols: usize) -> &'a [C] {
        &self.data[a * self.row_stride..a * self.row_stride + n_cols]
    }
}

/// Counts that cannot be those of the pair's genes: a count larger than its gene's bin
/// count (or than the cells), or a negative one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InconsistentCounts;

/// Computes pair MIs; holds the one scratch buffer that needs, so it is made once per tile.
pub struct PairFinisher<'a> {
    xlogx: &'a [f64],
    col_sums: Vec<i64>,
}

impl<'a> PairFinisher<'a> {
    /// A finisher using the table `xlogx[m] = m * log2(m)`.
    pub fn new(xlogx: &'a [f64]) -> Self {
        PairFinisher {
            xlogx,
            col_sums: Vec::new(),
        }
    }

    /// `xlogx[m]`, or an error when `m` is negative or past the table (more than the cells).
    fn xlogx(&self, m: i64) -> Result<f64, InconsistentCounts> {
        let m = usize::try_from(m).map_err(|_| InconsistentCounts)?;
        self.xlogx.get(m).copied().ok_or(InconsistentCounts)
    }

    /// Plug-in MI in bits of genes `i` (rows of `joint`) and `j` (columns), over the cells
    /// expressing either; 0 when no cell does. Clamped at 0.
    ///
    /// ```text
    /// S_joint = sum_ab xlogx[n_ij(a,b)]
    ///         + sum_a xlogx[n_i(a) - row_a] + sum_b xlogx[n_j(b) - col_b]
    /// S_i     = xlogx[n - z_i] + sum_a xlogx[n_i(a)]
    /// MI      = log2(n) + (S_joint - S_i - S_j) / n
    /// ```
    pub fn mutual_information<C: Count>(
        &mut self,
        joint: JointCounts<'_, C>,
        gene_i: &GeneMarginal<'_>,
        gene_j: &GeneMarginal<'_>,
    ) -> Result<f64, InconsistentCounts> {
        let n_cols = gene_j.bin_counts.len();
        let mut col_sums = std::mem::take(&mut self.col_sums);
        col_sums.clear();
        col_sums.resize(n_cols, 0);

        let mut cells_xlogx = 0.0;
        let mut rows_xlogx = 0.0;
        let mut both = 0i64;
        for (a, &n_a) in gene_i.bin_counts.iter().enumerate() {
            let mut row_sum = 0i64;
            for (&count, col_sum) in joint.row(a, n_cols).iter().zip(col_sums.iter_mut()) {
                let count: i64 = count.into();
                cells_xlogx += self.xlogx(count)?;
                row_sum += count;
                *col_sum += count;
            }
            rows_xlogx += self.xlogx(n_a - row_sum)?;
            both += row_sum;
        }
        let mut cols_xlogx = 0.0;
        for (&n_b, &col_sum) in gene_j.bin_counts.iter().zip(&col_sums) {
            cols_xlogx += self.xlogx(n_b - col_sum)?;
        }
        self.col_sums = col_sums;

        let n = gene_i.expressed + gene_j.expressed - both;
        if n == 0 {
            return Ok(0.0);
        }
        let s_joint = cells_xlogx + rows_xlogx + cols_xlogx;
        let s_i = self.xlogx(n - gene_i.expressed)? + gene_i.bins_xlogx;
        let s_j = self.xlogx(n - gene_j.expressed)? + gene_j.bins_xlogx;
        let n = n as f64;
        let mi = n.log2() + (s_joint - s_i - s_j) / n;
        Ok(mi.max(0.0))
    }
}

/// Sign of the Pearson correlation of two genes over `n_cells` cells, from the sum of their
/// products and their sums; 0 when undefined (a constant gene) or exactly uncorrelated.
pub fn correlation_sign(products: f64, n_cells: usize, sums: (f64, f64), both_vary: bool) -> f64 {
    if !both_vary {
        return 0.0;
    }
    let covariance = n_cells as f64 * products - sums.0 * sums.1;
    if covariance > 0.0 {
        1.0
    } else if covariance < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
pub(crate) mod reference {
    //! The definition written directly: plug-in MI of a joint histogram, for the tests.

    /// MI in bits of the joint histogram `joint[a][b]` (all cells counted).
    pub fn histogram_mi(joint: &[Vec<u64>]) -> f64 {
        let total: u64 = joint.iter().flatten().sum();
        if total == 0 {
            return 0.0;
        }
        let n = total as f64;
        let rows: Vec<f64> = joint.iter().map(|r| r.iter().sum::<u64>() as f64).collect();
        let n_cols = joint.first().map_or(0, Vec::len);
        let cols: Vec<f64> = (0..n_cols)
            .map(|b| joint.iter().map(|r| r[b]).sum::<u64>() as f64)
            .collect();
        let mut mi = 0.0;
        for (a, row) in joint.iter().enumerate() {
            for (b, &count) in row.iter().enumerate() {
                if count > 0 {
                    let p = count as f64 / n;
                    mi += p * (p / (rows[a] / n * cols[b] / n)).log2();
                }
            }
        }
        mi
    }
}

#[cfg(test)]
mod tests {
    use super::reference::histogram_mi;
    use super::*;

    fn xlogx_table(n: usize) -> Vec<f64> {
        (0..=n)
            .map(|m| {
                if m == 0 {
                    0.0
                } else {
                    m as f64 * (m as f64).log2()
                }
            })
            .collect()
    }

    /// MI through the finish, from a full joint histogram including the zero bins.
    fn finish_from_histogram(joint: &[Vec<u64>]) -> f64 {
        let n_i: Vec<i64> = joint[1..]
            .iter()
            .map(|r| r.iter().sum::<u64>() as i64)
            .collect();
        let n_j: Vec<i64> = (1..joint[0].len())
            .map(|b| joint.iter().map(|r| r[b]).sum::<u64>() as i64)
            .collect();
        let nonzero: Vec<u32> = joint[1..]
            .iter()
            .flat_map(|r| r[1..].iter().map(|&c| c as u32))
            .collect();
        let xlogx = xlogx_table(1000);
        let marginal = |counts: &'_ [i64]| -> (i64, f64) {
            (
                counts.iter().sum(),
                counts.iter().map(|&c| xlogx[c as usize]).sum(),
            )
        };
        let (z_i, s_i) = marginal(&n_i);
        let (z_j, s_j) = marginal(&n_j);
        let gene_i = GeneMarginal {
            bin_counts: &n_i,
            expressed: z_i,
            bins_xlogx: s_i,
        };
        let gene_j = GeneMarginal {
            bin_counts: &n_j,
            expressed: z_j,
            bins_xlogx: s_j,
        };
        let joint = JointCounts {
            data: &nonzero,
            row_stride: n_j.len(),
        };
        PairFinisher::new(&xlogx)
            .mutual_information(joint, &gene_i, &gene_j)
            .unwrap()
    }

    #[test]
    fn finish_equals_the_histogram_definition() {
        let cases: Vec<Vec<Vec<u64>>> = vec![
            vec![vec![0, 3, 1], vec![2, 5, 0], vec![4, 0, 7]],
            vec![vec![0, 10], vec![10, 0]],
            vec![vec![0, 0, 0], vec![0, 4, 0], vec![0, 0, 6]],
            vec![vec![0, 2, 2, 1], vec![3, 1, 1, 0], vec![0, 0, 9, 2]],
        ];
        for joint in cases {
            let expected = histogram_mi(&joint);
            let got = finish_from_histogram(&joint);
            assert!(
                (got - expected).abs() < 1e-12,
                "{joint:?}: {got} != {expected}"
            );
        }
    }

    #[test]
    fn counts_beyond_the_marginals_are_an_error() {
        let xlogx = xlogx_table(10);
        let counts = [3i64];
        let gene = GeneMarginal {
            bin_counts: &counts,
            expressed: 3,
            bins_xlogx: xlogx[3],
        };
        let mut finisher = PairFinisher::new(&xlogx);
        for bad in [4i64, -1, 11] {
            let joint = JointCounts {
                data: &[bad],
                row_stride: 1,
            };
            let result = finisher.mutual_information(joint, &gene, &gene);
            assert_eq!(result, Err(InconsistentCounts), "count {bad}");
        }
        let joint = JointCounts {
            data: &[3i64],
            row_stride: 1,
        };
        assert_eq!(finisher.mutual_information(joint, &gene, &gene), Ok(0.0));
    }

    #[test]
    fn no_counted_cell_gives_zero() {
        assert_eq!(finish_from_histogram(&[vec![0, 0], vec![0, 0]]), 0.0);
    }

    #[test]
    fn independent_genes_give_zero() {
        // Bins of i and j independent over the counted cells: MI is 0 (up to rounding).
        let got = finish_from_histogram(&[vec![0, 0, 0], vec![0, 2, 4], vec![0, 4, 8]]);
        assert!(got.abs() < 1e-12, "{got}");
        assert!(got >= 0.0);
    }

    #[test]
    fn sign_of_covariance() {
        assert_eq!(correlation_sign(10.0, 4, (3.0, 5.0), true), 1.0);
        assert_eq!(correlation_sign(1.0, 4, (3.0, 5.0), true), -1.0);
        assert_eq!(correlation_sign(3.75, 4, (3.0, 5.0), true), 0.0);
        assert_eq!(correlation_sign(10.0, 4, (3.0, 5.0), false), 0.0);
    }
}
