//! The kernel input: a borrowed view of the binned genes, and its checks.
//!
//! This mirrors `geneverse.kernels._base.BinnedGenes`: one CSR row per cell whose
//! entries are the cell's expressed genes (increasing), their bins and their values.

use std::ops::Range;

/// Largest number of bins of a gene (bins are stored as `u8`, the zero bin included).
pub const MAX_BINS: usize = 256;

/// The genes' nonzero bins, cell by cell, and the per-gene tables the MI finish needs.
#[derive(Clone, Copy, Debug)]
pub struct Binned<'a> {
    /// `n_cells + 1` offsets: cell `c` owns entries `indptr[c]..indptr[c + 1]`.
    pub indptr: &'a [i64],
    /// The gene of each entry, strictly increasing within a cell.
    pub genes: &'a [i32],
    /// The bin of each entry, `1..n_bins[gene]`.
    pub bins: &'a [u8],
    /// The expression value of each entry.
    pub values: &'a [f64],
    /// Bins per gene, the zero bin included.
    pub n_bins: &'a [i32],
    /// Row-major `(n_genes, max_bins)`: cells with gene `g` in bin `a` (column 0 unused).
    pub bin_counts: &'a [i64],
    /// Number of columns of `bin_counts`.
    pub max_bins: usize,
    /// Sum of each gene's values over all cells.
    pub value_sums: &'a [f64],
    /// Whether each gene is not constant over the cells.
    pub varies: &'a [bool],
    /// `xlogx[m] = m * log2(m)`, at least `n_cells + 1` entries.
    pub xlogx: &'a [f64],
}

impl<'a> Binned<'a> {
    /// Number of cells (CSR rows).
    pub fn n_cells(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Number of genes (columns).
    pub fn n_genes(&self) -> usize {
        self.n_bins.len()
    }

    /// The entries of cell `cell`.
    pub fn cell_entries(&self, cell: usize) -> Range<usize> {
        self.indptr[cell] as usize..self.indptr[cell + 1] as usize
    }

    /// Counts of gene `gene` in its nonzero bins: `n_g(1), ..., n_g(n_bins[g] - 1)`.
    pub fn nonzero_bin_counts(&self, gene: usize) -> &'a [i64] {
        let row = gene * self.max_bins;
        &self.bin_counts[row + 1..row + self.n_bins[gene] as usize]
    }

    /// Checks every size and every per-gene table; O(genes · bins + cells).
    ///
    /// Enough for the kernel to index safely by gene; entries are checked by
    /// [`Binned::check_entries`].
    pub fn check_shapes(&self) -> Result<(), String> {
        let n_genes = self.n_genes();
        let nnz = self.genes.len();
        if self.indptr.is_empty() {
            return Err("indptr must have n_cells + 1 >= 1 entries".into());
        }
        if self.indptr[0] != 0 || *self.indptr.last().unwrap_or(&0) != nnz as i64 {
            return Err(format!(
                "indptr must start at 0 and end at the number of entries ({nnz})"
            ));
        }
        if self.n_cells() >= u32::MAX as usize {
            return Err(format!("at most {} cells are supported", u32::MAX - 1));
        }
        if self.indptr.windows(2).any(|w| w[0] > w[1]) {
            return Err("indptr must be non-decreasing".into());
        }
        if self.bins.len() != nnz || self.values.len() != nnz {
            return Err(format!(
                "genes, bins and values must have the same length (got {}, {}, {})",
                nnz,
                self.bins.len(),
                self.values.len()
            ));
        }
        if self.max_bins == 0 || self.max_bins > MAX_BINS {
            return Err(format!(
                "bin_counts must have 1 to {MAX_BINS} columns (got {})",
                self.max_bins
            ));
        }
        if self.bin_counts.len() != n_genes * self.max_bins {
            return Err(format!(
                "bin_counts must have shape (n_genes, max_bins) = ({n_genes}, {})",
                self.max_bins
            ));
        }
        if self.value_sums.len() != n_genes || self.varies.len() != n_genes {
            return Err(format!(
                "value_sums and varies must have n_genes = {n_genes} entries (got {}, {})",
                self.value_sums.len(),
                self.varies.len()
            ));
        }
        if self.xlogx.len() <= self.n_cells() {
            return Err(format!(
                "xlogx must have at least n_cells + 1 = {} entries (got {})",
                self.n_cells() + 1,
                self.xlogx.len()
            ));
        }
        if let Some(g) =
            (0..n_genes).find(|&g| !(1..=self.max_bins as i32).contains(&self.n_bins[g]))
        {
            return Err(format!(
                "n_bins[{g}] = {} is not in 1..={} (the columns of bin_counts)",
                self.n_bins[g], self.max_bins
            ));
        }
        let n_cells = self.n_cells() as i64;
        for g in 0..n_genes {
            let counts = self.nonzero_bin_counts(g);
            if counts.iter().any(|&n| n < 0) || counts.iter().sum::<i64>() > n_cells {
                return Err(format!(
                    "bin_counts[{g}] must be non-negative and sum to at most n_cells"
                ));
            }
        }
        Ok(())
    }

    /// Checks every entry against the gene tables; O(entries + genes · bins).
    ///
    /// Genes must be in range and strictly increasing within each cell, bins in
    /// `1..n_bins[gene]`, and no bin may have more entries than `bin_counts` says. (It may
    /// have fewer: a summary of many chunks of cells holds their bin counts and no entry.)
    pub fn check_entries(&self) -> Result<(), String> {
        let n_genes = self.n_genes();
        let mut counted = vec![0i64; n_genes * self.max_bins];
        for cell in 0..self.n_cells() {
            let mut previous: i64 = -1;
            for e in self.cell_entries(cell) {
                let gene = self.genes[e] as i64;
                if gene <= previous || gene >= n_genes as i64 {
                    return Err(format!(
                        "the genes of cell {cell} must be strictly increasing and in 0..{n_genes} \
                         (entry {e}: gene {gene})"
                    ));
                }
                previous = gene;
                let gene = gene as usize;
                let bin = self.bins[e] as usize;
                if bin == 0 || bin >= self.n_bins[gene] as usize {
                    return Err(format!(
                        "entry {e} (cell {cell}, gene {gene}) has bin {bin}, not in 1..{}",
                        self.n_bins[gene]
                    ));
                }
                counted[gene * self.max_bins + bin] += 1;
            }
        }
        let over = counted
            .iter()
            .zip(self.bin_counts)
            .position(|(&n, &limit)| n > limit);
        if let Some(at) = over {
            let (gene, bin) = (at / self.max_bins, at % self.max_bins);
            return Err(format!(
                "gene {gene} has {} entries in bin {bin}, more than bin_counts[{gene}, {bin}] = {}",
                counted[at], self.bin_counts[at]
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Owned inputs for the unit tests, built from a dense cells × genes matrix of bins.

    use super::Binned;

    /// A deterministic pseudo-random stream (xorshift64) for test inputs.
    pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// Owned arrays behind a [`Binned`] view.
    pub struct OwnedBinned {
        pub indptr: Vec<i64>,
        pub genes: Vec<i32>,
        pub bins: Vec<u8>,
        pub values: Vec<f64>,
        pub n_bins: Vec<i32>,
        pub bin_counts: Vec<i64>,
        pub max_bins: usize,
        pub value_sums: Vec<f64>,
        pub varies: Vec<bool>,
        pub xlogx: Vec<f64>,
    }

    impl OwnedBinned {
        /// From `bins[cell][gene]` (0 = not expressed) and the matching `values`.
        pub fn from_dense(bins: &[Vec<u8>], values: &[Vec<f64>], n_bins: &[i32]) -> Self {
            let n_genes = n_bins.len();
            let max_bins = *n_bins.iter().max().unwrap_or(&1) as usize;
            let mut out = OwnedBinned {
                indptr: vec![0],
                genes: vec![],
                bins: vec![],
                values: vec![],
                n_bins: n_bins.to_vec(),
                bin_counts: vec![0; n_genes * max_bins],
                max_bins,
                value_sums: vec![0.0; n_genes],
                varies: vec![false; n_genes],
                xlogx: (0..=bins.len())
                    .map(|m| {
                        if m == 0 {
                            0.0
                        } else {
                            m as f64 * (m as f64).log2()
                        }
                    })
                    .collect(),
            };
            for (cell_bins, cell_values) in bins.iter().zip(values) {
                for (g, (&b, &x)) in cell_bins.iter().zip(cell_values).enumerate() {
                    if b > 0 {
                        out.genes.push(g as i32);
                        out.bins.push(b);
                        out.values.push(x);
                        out.bin_counts[g * max_bins + b as usize] += 1;
                    }
                    out.value_sums[g] += x;
                }
                out.indptr.push(out.genes.len() as i64);
            }
            for g in 0..n_genes {
                let first = values.first().map_or(0.0, |row| row[g]);
                out.varies[g] = values.iter().any(|row| row[g] != first);
            }
            out
        }

        pub fn view(&self) -> Binned<'_> {
            Binned {
                indptr: &self.indptr,
                genes: &self.genes,
                bins: &self.bins,
                values: &self.values,
                n_bins: &self.n_bins,
                bin_counts: &self.bin_counts,
                max_bins: self.max_bins,
                value_sums: &self.value_sums,
                varies: &self.varies,
                xlogx: &self.xlogx,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::OwnedBinned;

    fn small() -> OwnedBinned {
        let bins = vec![vec![1, 0, 2], vec![0, 1, 1], vec![2, 1, 0]];
        let values = vec![
            vec![1.0, 0.0, 5.0],
            vec![0.0, 2.0, 3.0],
            vec![4.0, 2.0, 0.0],
        ];
        OwnedBinned::from_dense(&bins, &values, &[3, 2, 3])
    }

    #[test]
    fn valid_input_passes() {
        let owned = small();
        assert_eq!(owned.view().check_shapes(), Ok(()));
        assert_eq!(owned.view().check_entries(), Ok(()));
    }

    #[test]
    fn unsorted_genes_are_rejected() {
        let mut owned = small();
        owned.genes.swap(0, 1);
        assert!(owned
            .view()
            .check_entries()
            .unwrap_err()
            .contains("increasing"));
    }

    #[test]
    fn bin_outside_the_gene_is_rejected() {
        let mut owned = small();
        owned.bins[0] = 3;
        assert!(owned.view().check_entries().unwrap_err().contains("bin 3"));
    }

    #[test]
    fn bin_counts_below_the_entries_are_rejected() {
        let mut owned = small();
        owned.bin_counts[1] -= 1;
        assert!(owned
            .view()
            .check_entries()
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn a_summary_without_entries_passes() {
        let mut owned = small();
        owned.indptr.fill(0);
        owned.genes.clear();
        owned.bins.clear();
        owned.values.clear();
        assert_eq!(owned.view().check_shapes(), Ok(()));
        assert_eq!(owned.view().check_entries(), Ok(()));
    }

    #[test]
    fn short_xlogx_is_rejected() {
        let mut owned = small();
        owned.xlogx.pop();
        assert!(owned.view().check_shapes().unwrap_err().contains("xlogx"));
    }
}
