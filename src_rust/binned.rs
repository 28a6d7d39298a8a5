//! The kernel input: a borrowed view of the binned genes, and its checks.
//!
//! This mirrors `geneverse._data._binned.BinnedGenes`: one CSR row per cell whose
//! entries are the cell's expressed genes (increasing), their bins and their sign values,
//! and the per-gene tables of the finish, made once in binning and read here as they are
//! (the docs page "How the scores are computed").

use std::ops::Range;

use rayon::prelude::*;

/// Largest number of bins of a gene (bins are stored as `u8`, the zero bin included).
pub const MAX_BINS: usize = 256;

/// The genes' nonzero bins, cell by cell, and the per-gene tables the finish reads.
#[derive(Clone, Copy, Debug)]
pub struct Binned<'a> {
    /// `n_cells + 1` offsets: cell `c` owns entries `indptr[c]..indptr[c + 1]`.
    pub indptr: &'a [i64],
    /// The gene of each entry, strictly increasing within a cell.
    pub genes: &'a [i32],
    /// The bin of each entry, `1..n_bins[gene]`.
    pub bins: &'a [u8],
    /// The sign value of each entry (in `[-1, 1]`; the signs are computed from them).
    pub values: &'a [f64],
    /// Bins per gene, the zero bin included.
    pub n_bins: &'a [i32],
    /// Row-major `(n_genes, max_bins)`: cells with gene `g` in bin `a` (column 0 unused).
    pub bin_counts: &'a [i64],
    /// Number of columns of `bin_counts`.
    pub max_bins: usize,
    /// Whether each gene is not constant over the cells.
    pub varies: &'a [bool],
    /// Each gene's sign values summed over the cells, in increasing cell order.
    pub value_sums: &'a [f64],
    /// `sqrt` of each gene's sum of squared sign values.
    pub value_norms: &'a [f64],
    /// `z_g`: cells expressing each gene (the sum of its nonzero bin counts).
    pub expressed: &'a [i64],
    /// `sum_{a >= 1} xlogx[bin_counts[g, a]]`, `a` increasing.
    pub bins_xlogx: &'a [f64],
    /// Each gene's nonzero bins that some cell is in.
    pub occupied: &'a [i64],
    /// Williams' sum over the occupied rows of each gene's full table.
    pub full_inverse: &'a [f64],
    /// `xlogx[m] = m * log2(m)`, at least `n_cells + 1` entries.
    pub xlogx: &'a [f64],
    /// `log2[m] = log2(m)` (0 at `m = 0`), at least `n_cells + 1` entries.
    pub log2: &'a [f64],
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
        let per_gene = [
            ("varies", self.varies.len()),
            ("value_sums", self.value_sums.len()),
            ("value_norms", self.value_norms.len()),
            ("expressed", self.expressed.len()),
            ("bins_xlogx", self.bins_xlogx.len()),
            ("occupied", self.occupied.len()),
            ("full_inverse", self.full_inverse.len()),
        ];
        if let Some((name, len)) = per_gene.iter().find(|(_, len)| *len != n_genes) {
            return Err(format!(
                "{name} must have n_genes = {n_genes} entries (got {len})"
            ));
        }
        for (name, table) in [("xlogx", self.xlogx), ("log2", self.log2)] {
            if table.len() <= self.n_cells() {
                return Err(format!(
                    "{name} must have at least n_cells + 1 = {} entries (got {})",
                    self.n_cells() + 1,
                    table.len()
                ));
            }
        }
        if let Some(g) =
            (0..n_genes).find(|&g| !(1..=self.max_bins as i32).contains(&self.n_bins[g]))
        {
            return Err(format!(
                "n_bins[{g}] = {} is not in 1..={} (the columns of bin_counts)",
                self.n_bins[g], self.max_bins
            ));
        }
        self.check_gene_tables()
    }

    /// Checks that the integer tables of each gene agree with its bin counts (the float
    /// tables are read as they are).
    fn check_gene_tables(&self) -> Result<(), String> {
        let n_cells = self.n_cells() as i64;
        for g in 0..self.n_genes() {
            let counts = self.nonzero_bin_counts(g);
            if counts.iter().any(|&n| n < 0) || counts.iter().sum::<i64>() > n_cells {
                return Err(format!(
                    "bin_counts[{g}] must be non-negative and sum to at most n_cells"
                ));
            }
            let expressed: i64 = counts.iter().sum();
            if self.expressed[g] != expressed {
                return Err(format!(
                    "expressed[{g}] = {} is not the sum of bin_counts[{g}, 1:] ({expressed})",
                    self.expressed[g]
                ));
            }
            let occupied = counts.iter().filter(|&&n| n > 0).count() as i64;
            if self.occupied[g] != occupied {
                return Err(format!(
                    "occupied[{g}] = {} is not the number of nonzero bin_counts[{g}, 1:] \
                     ({occupied})",
                    self.occupied[g]
                ));
            }
        }
        Ok(())
    }

    /// Checks every entry against the gene tables; O(entries + genes · bins), in
    /// parallel over runs of cells on the current rayon pool.
    ///
    /// Genes must be in range and strictly increasing within each cell, bins in
    /// `1..n_bins[gene]`, and every bin must have exactly as many entries as `bin_counts`
    /// says (the finish derives every cell of a pair's table from them). The error names
    /// the first wrong entry.
    pub fn check_entries(&self) -> Result<(), String> {
        let table = self.n_genes() * self.max_bins;
        // One table of counts per run of cells (at most 64 MiB of them in all).
        let n_runs = rayon::current_num_threads()
            .min((16 << 20) / table.max(1))
            .clamp(1, self.n_cells().max(1));
        let runs: Vec<Range<usize>> = (0..n_runs)
            .map(|k| k * self.n_cells() / n_runs..(k + 1) * self.n_cells() / n_runs)
            .collect();
        let counted: Vec<Result<Vec<u32>, String>> = runs
            .into_par_iter()
            .map(|cells| self.count_entries(cells))
            .collect();
        let mut total = vec![0u32; table];
        for run in counted {
            for (sum, n) in total.iter_mut().zip(run?) {
                *sum += n;
            }
        }
        let differs = total
            .iter()
            .zip(self.bin_counts)
            .enumerate()
            .position(|(at, (&n, &expected))| at % self.max_bins != 0 && i64::from(n) != expected);
        if let Some(at) = differs {
            let (gene, bin) = (at / self.max_bins, at % self.max_bins);
            return Err(format!(
                "gene {gene} has {} entries in bin {bin}, but bin_counts[{gene}, {bin}] = {}",
                total[at], self.bin_counts[at]
            ));
        }
        Ok(())
    }

    /// The entries of the cells `cells` checked, and counted per gene and bin
    /// (`gene * max_bins + bin`).
    fn count_entries(&self, cells: Range<usize>) -> Result<Vec<u32>, String> {
        let n_genes = self.n_genes();
        let mut counted = vec![0u32; n_genes * self.max_bins];
        for cell in cells {
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
                        "bins[{e}] = {bin} (cell {cell}, gene {gene}) is not in 1..{}",
                        self.n_bins[gene]
                    ));
                }
                counted[gene * self.max_bins + bin] += 1;
            }
        }
        Ok(counted)
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
        pub varies: Vec<bool>,
        pub value_sums: Vec<f64>,
        pub value_norms: Vec<f64>,
        pub expressed: Vec<i64>,
        pub bins_xlogx: Vec<f64>,
        pub occupied: Vec<i64>,
        pub full_inverse: Vec<f64>,
        pub xlogx: Vec<f64>,
        pub log2: Vec<f64>,
    }

    impl OwnedBinned {
        /// From `bins[cell][gene]` (0 = not expressed) and the matching `values`, with the
        /// per-gene tables made as `BinnedGenes.of` makes them.
        pub fn from_dense(bins: &[Vec<u8>], values: &[Vec<f64>], n_bins: &[i32]) -> Self {
            let n_genes = n_bins.len();
            let n_cells = bins.len();
            let max_bins = *n_bins.iter().max().unwrap_or(&1) as usize;
            let log2: Vec<f64> = (0..=n_cells)
                .map(|m| if m == 0 { 0.0 } else { (m as f64).log2() })
                .collect();
            let xlogx = log2.iter().enumerate().map(|(m, l)| m as f64 * l).collect();
            let mut out = OwnedBinned {
                indptr: vec![0],
                genes: vec![],
                bins: vec![],
                values: vec![],
                n_bins: n_bins.to_vec(),
                bin_counts: vec![0; n_genes * max_bins],
                max_bins,
                varies: vec![false; n_genes],
                value_sums: vec![0.0; n_genes],
                value_norms: vec![0.0; n_genes],
                expressed: vec![0; n_genes],
                bins_xlogx: vec![0.0; n_genes],
                occupied: vec![0; n_genes],
                full_inverse: vec![0.0; n_genes],
                xlogx,
                log2,
            };
            for (cell_bins, cell_values) in bins.iter().zip(values) {
                for (g, (&b, &x)) in cell_bins.iter().zip(cell_values).enumerate() {
                    if b > 0 {
                        out.genes.push(g as i32);
                        out.bins.push(b);
                        out.values.push(x);
                        out.bin_counts[g * max_bins + b as usize] += 1;
                        out.value_sums[g] += x;
                        out.value_norms[g] += x * x;
                    }
                }
                out.indptr.push(out.genes.len() as i64);
            }
            for g in 0..n_genes {
                let first = values.first().map_or(0.0, |row| row[g]);
                out.varies[g] = values.iter().any(|row| row[g] != first);
                out.value_norms[g] = out.value_norms[g].sqrt();
                let counts = &out.bin_counts[g * max_bins + 1..(g + 1) * max_bins];
                out.expressed[g] = counts.iter().sum();
                out.bins_xlogx[g] = counts.iter().fold(0.0, |s, &n| s + out.xlogx[n as usize]);
                out.occupied[g] = counts.iter().filter(|&&n| n > 0).count() as i64;
                let inverse =
                    counts.iter().fold(
                        0.0,
                        |s, &n| if n > 0 { s + 1.0 / n as f64 } else { s + 0.0 },
                    );
                let unexpressed = n_cells as i64 - out.expressed[g];
                out.full_inverse[g] = if unexpressed > 0 {
                    inverse + 1.0 / unexpressed as f64
                } else {
                    inverse + 0.0
                };
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
                varies: &self.varies,
                value_sums: &self.value_sums,
                value_norms: &self.value_norms,
                expressed: &self.expressed,
                bins_xlogx: &self.bins_xlogx,
                occupied: &self.occupied,
                full_inverse: &self.full_inverse,
                xlogx: &self.xlogx,
                log2: &self.log2,
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
        assert_eq!(owned.expressed, vec![2, 2, 2]);
        assert_eq!(owned.occupied, vec![2, 1, 2]);
        assert_eq!(owned.full_inverse[1], 1.0 / 2.0 + 1.0);
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
        assert!(owned
            .view()
            .check_entries()
            .unwrap_err()
            .contains("bins[0] = 3"));
    }

    #[test]
    fn bin_counts_other_than_the_entries_are_rejected() {
        for change in [-1, 1] {
            let mut owned = small();
            owned.bin_counts[1] += change;
            assert!(owned
                .view()
                .check_entries()
                .unwrap_err()
                .contains("bin_counts[0, 1]"));
        }
    }

    #[test]
    fn tables_other_than_the_bin_counts_are_rejected() {
        let mut owned = small();
        owned.expressed[2] += 1;
        assert!(owned
            .view()
            .check_shapes()
            .unwrap_err()
            .contains("expressed[2]"));
        let mut owned = small();
        owned.occupied[0] = 1;
        assert!(owned
            .view()
            .check_shapes()
            .unwrap_err()
            .contains("occupied[0]"));
        let mut owned = small();
        owned.full_inverse.pop();
        assert!(owned
            .view()
            .check_shapes()
            .unwrap_err()
            .contains("full_inverse"));
    }

    #[test]
    fn short_tables_are_rejected() {
        let mut owned = small();
        owned.xlogx.pop();
        assert!(owned.view().check_shapes().unwrap_err().contains("xlogx"));
        let mut owned = small();
        owned.log2.pop();
        assert!(owned.view().check_shapes().unwrap_err().contains("log2"));
    }
}
