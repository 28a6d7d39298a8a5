//! Co-occurrence counting (the docs page "How the scores are computed"): the integer
//! joint histograms `n_ij(a, b)`, `a, b >= 1`, and the sums of products of the sign values
//! `sum_c x_ic x_jc`, of a tile of gene pairs, by one scan over the cells.
//!
//! A tile is a block of row genes × a block of column genes. For each cell, every pair of
//! a row entry and a column entry is one increment: `sum over cells of nnz_I · nnz_J`
//! increments, nothing for cells expressing neither block. On the diagonal (both blocks
//! the same) only pairs of an entry with a later one count, so each pair of genes once.

use std::ops::Range;

use crate::blocks::Block;
use crate::dense::count_pairs;
use crate::finish::JointCounts;
use crate::products::add_dense_products;

/// Row entries of a cell counted together (sharing the reads of its column entries).
const ROW_GROUP: usize = 4;

/// Some column entries of one cell.
struct ColumnEntries {
    /// Positions in the column block.
    entries: Range<usize>,
    /// The column of the first one, when they are consecutive columns (the cell expresses
    /// every gene of the block); `None` to read each entry's column.
    first_col: Option<usize>,
}

/// The counts and sums of products of one tile, reused from tile to tile.
///
/// `counts[slot_i * row_len + slot_j]` where a slot is `col * stride + bin - 1` (see
/// [`Block::slots`]) and `row_len = block_genes * stride`;
/// `products[col_i * block_genes + col_j]`. Only pairs `i < j` are ever counted;
/// [`TileAccumulator::clear_pair`] sets a pair's counts back to 0 once it is taken, and
/// [`TileAccumulator::clear_products`] the products, so a tile never needs a full reset.
pub struct TileAccumulator {
    block_genes: usize,
    stride: usize,
    counts: Vec<u32>,
    products: Vec<f64>,
}

impl TileAccumulator {
    /// Room for two blocks of up to `block_genes` genes with up to `stride` nonzero bins;
    /// sums of products only `with_products`.
    pub fn new(block_genes: usize, stride: usize, with_products: bool) -> Self {
        let row_len = block_genes * stride;
        TileAccumulator {
            block_genes,
            stride,
            counts: vec![0; row_len * row_len],
            products: if with_products {
                vec![0.0; block_genes * block_genes]
            } else {
                Vec::new()
            },
        }
    }

    fn row_len(&self) -> usize {
        self.block_genes * self.stride
    }

    /// Counts the tile: pairs of an entry of `rows` with an entry of `cols` (with a later
    /// entry when `rows` and `cols` are the same block), and their sums of products.
    /// Tiles of two dense blocks are counted with their bitsets when they have them, and
    /// their products summed as a matrix product (faster, and the same sums bit for bit).
    /// Needs a clear tile.
    pub fn count(&mut self, rows: &Block, cols: &Block) {
        let same_block = rows.genes == cols.genes;
        let with_products = !self.products.is_empty();
        let row_len = self.row_len();
        match (&rows.dense, &cols.dense) {
            (Some(dense_rows), Some(dense_cols)) => {
                if dense_rows.has_bitsets() && dense_cols.has_bitsets() {
                    count_pairs(
                        dense_rows,
                        dense_cols,
                        same_block,
                        &mut self.counts,
                        row_len,
                    );
                } else {
                    self.scan(rows, cols, false);
                }
                if with_products {
                    add_dense_products(
                        &mut self.products,
                        self.block_genes,
                        dense_rows,
                        dense_cols,
                        same_block,
                    );
                }
            }
            _ => self.scan(rows, cols, with_products),
        }
    }

    /// The co-occurrence scan: adds every cell's pairs of entries (and their products when
    /// `sum_products`).
    fn scan(&mut self, rows: &Block, cols: &Block, sum_products: bool) {
        let same_block = rows.genes == cols.genes;
        let (mut p, mut q) = (0usize, 0usize);
        for (&n_rows, &n_cols) in rows.per_cell.iter().zip(&cols.per_cell) {
            let (n_rows, n_cols) = (usize::from(n_rows), usize::from(n_cols));
            if n_rows > 0 && n_cols > 0 {
                let entries = (p..p + n_rows, q..q + n_cols);
                self.add_cell(rows, cols, entries, same_block, sum_products);
            }
            p += n_rows;
            q += n_cols;
        }
    }

    /// Adds one cell, whose entries are `row_entries` of `rows` and `col_entries` of `cols`
    /// (and their products when `sum_products`).
    fn add_cell(
        &mut self,
        rows: &Block,
        cols: &Block,
        (row_entries, col_entries): (Range<usize>, Range<usize>),
        same_block: bool,
        sum_products: bool,
    ) {
        // A cell expressing every gene of `cols` has its k-th entry in column k.
        let in_order = col_entries.len() == cols.genes.len();
        let columns = |skip: usize| ColumnEntries {
            entries: col_entries.start + skip..col_entries.end,
            first_col: in_order.then_some(skip),
        };
        if same_block {
            // Each row entry with the later entries only.
            for (k, p) in row_entries.enumerate() {
                if k + 1 >= col_entries.len() {
                    break;
                }
                self.add_rows::<1>(rows, p, cols, columns(k + 1), sum_products);
            }
            return;
        }
        let mut p = row_entries.start;
        while p + ROW_GROUP <= row_entries.end {
            self.add_rows::<ROW_GROUP>(rows, p, cols, columns(0), sum_products);
            p += ROW_GROUP;
        }
        for p in p..row_entries.end {
            self.add_rows::<1>(rows, p, cols, columns(0), sum_products);
        }
    }

    /// Adds the pairs of the `N` row entries `p..p + N` of `rows` (of one cell) with the
    /// column entries `columns` of `cols`. Groups of rows share the reads of the columns.
    fn add_rows<const N: usize>(
        &mut self,
        rows: &Block,
        p: usize,
        cols: &Block,
        columns: ColumnEntries,
        sum_products: bool,
    ) {
        let row_len = self.row_len();
        let col_slots = &cols.slots[columns.entries.clone()];
        // Slots increase along a cell's entries, so the rows are distinct.
        let count_rows: [usize; N] =
            std::array::from_fn(|k| usize::from(rows.slots[p + k]) * row_len);
        let mut count_rows = self
            .counts
            .get_disjoint_mut(count_rows.map(|at| at..at + row_len))
            .expect("a cell's entries have distinct slots");
        for &slot in col_slots {
            for row in count_rows.iter_mut() {
                row[usize::from(slot)] += 1;
            }
        }
        if !sum_products {
            return;
        }
        let width = self.block_genes;
        let xs: [f64; N] = std::array::from_fn(|k| rows.values[p + k]);
        let product_rows: [usize; N] =
            std::array::from_fn(|k| usize::from(rows.cols[p + k]) * width);
        let mut product_rows = self
            .products
            .get_disjoint_mut(product_rows.map(|at| at..at + width))
            .expect("a cell's entries have distinct columns");
        let ys = &cols.values[columns.entries.clone()];
        match columns.first_col {
            Some(first) => {
                for (row, x) in product_rows.iter_mut().zip(xs) {
                    for (sum, &y) in row[first..first + ys.len()].iter_mut().zip(ys) {
                        *sum += x * y;
                    }
                }
            }
            None => {
                for (&col, &y) in cols.cols[columns.entries].iter().zip(ys) {
                    for (row, x) in product_rows.iter_mut().zip(xs) {
                        row[usize::from(col)] += x * y;
                    }
                }
            }
        }
    }

    /// The counts of the gene in column `col_i` of the row block against the gene in
    /// column `col_j` of the column block.
    pub fn joint(&self, col_i: usize, col_j: usize) -> JointCounts<'_> {
        let row_len = self.row_len();
        let start = col_i * self.stride * row_len + col_j * self.stride;
        JointCounts {
            data: &self.counts[start..],
            row_stride: row_len,
        }
    }

    /// `sum_c x_ic x_jc` over the cells expressing both, added in increasing cell order
    /// (0 when the tile does not sum products).
    pub fn product(&self, col_i: usize, col_j: usize) -> f64 {
        self.products
            .get(col_i * self.block_genes + col_j)
            .copied()
            .unwrap_or(0.0)
    }

    /// Sets the counts of a pair back to 0: its first `bins_i × bins_j` counts (the only
    /// ones its genes' entries reach).
    pub fn clear_pair(&mut self, col_i: usize, col_j: usize, bins_i: usize, bins_j: usize) {
        let row_len = self.row_len();
        let start = col_i * self.stride * row_len + col_j * self.stride;
        for a in 0..bins_i {
            self.counts[start + a * row_len..][..bins_j].fill(0);
        }
    }

    /// Sets every sum of products back to 0.
    pub fn clear_products(&mut self) {
        self.products.fill(0.0);
    }

    /// Whether every count and sum of products is 0 (for tests and debug checks).
    pub fn is_clear(&self) -> bool {
        self.counts.iter().all(|&c| c == 0) && self.products.iter().all(|&s| s == 0.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::binned::testing::{xorshift, OwnedBinned};
    use crate::binned::Binned;
    use crate::blocks::BlockedGenes;
    use crate::dense::DensePolicy;

    /// Pseudo-random input (xorshift): about `density` of the entries expressed, genes
    /// with the given bins.
    pub fn random_binned(n_cells: usize, n_bins: &[i32], density: f64, seed: u64) -> OwnedBinned {
        let mut next = xorshift(seed);
        let mut bins = vec![vec![0u8; n_bins.len()]; n_cells];
        let mut values = vec![vec![0.0; n_bins.len()]; n_cells];
        for cell in 0..n_cells {
            for (g, &k) in n_bins.iter().enumerate() {
                if k > 1 && (next() % 1000) as f64 / 1000.0 < density {
                    bins[cell][g] = 1 + (next() % (k as u64 - 1)) as u8;
                    // Sign values: in [-1, 1], of either sign.
                    let x = f64::from(bins[cell][g]) + (next() % 4) as f64 * 0.25;
                    values[cell][g] = (x - 3.0) / 8.0;
                }
            }
        }
        OwnedBinned::from_dense(&bins, &values, n_bins)
    }

    /// `n_ij(a, b)` and the sum of products by a direct scan of every cell.
    fn direct(binned: &Binned<'_>, i: usize, j: usize) -> (Vec<Vec<u32>>, f64) {
        let (ki, kj) = (binned.n_bins[i] as usize, binned.n_bins[j] as usize);
        let mut joint = vec![vec![0u32; kj - 1]; ki - 1];
        let mut products = 0.0;
        for cell in 0..binned.n_cells() {
            let entries = binned.cell_entries(cell);
            let find = |g: usize| entries.clone().find(|&e| binned.genes[e] as usize == g);
            if let (Some(p), Some(q)) = (find(i), find(j)) {
                joint[binned.bins[p] as usize - 1][binned.bins[q] as usize - 1] += 1;
                products += binned.values[p] * binned.values[q];
            }
        }
        (joint, products)
    }

    fn check_every_tile(owned: &OwnedBinned, block_genes: usize, policy: DensePolicy) {
        let binned = owned.view();
        let blocked = BlockedGenes::build(&binned, block_genes, true, policy);
        let mut tile = TileAccumulator::new(block_genes, blocked.stride, true);
        for (bi, rows) in blocked.blocks.iter().enumerate() {
            for cols in &blocked.blocks[bi..] {
                tile.count(rows, cols);
                for i in rows.genes.lo..rows.genes.hi {
                    for j in cols.genes.lo.max(i + 1)..cols.genes.hi {
                        let (ci, cj) = (i - rows.genes.lo, j - cols.genes.lo);
                        let (expected, products) = direct(&binned, i, j);
                        let joint = tile.joint(ci, cj);
                        for (a, row) in expected.iter().enumerate() {
                            let got = &joint.data[a * joint.row_stride..][..row.len()];
                            assert_eq!(
                                got,
                                &row[..],
                                "block {block_genes}, pair ({i}, {j}), bin {a}"
                            );
                        }
                        assert_eq!(
                            tile.product(ci, cj).to_bits(),
                            products.to_bits(),
                            "pair ({i}, {j})"
                        );
                        tile.clear_pair(
                            ci,
                            cj,
                            expected.len(),
                            expected.first().map_or(0, Vec::len),
                        );
                    }
                }
                tile.clear_products();
                assert!(
                    tile.is_clear(),
                    "block {block_genes}: counts left after clearing"
                );
            }
        }
    }

    #[test]
    fn tiles_count_every_pair_once() {
        let n_bins = [3, 1, 5, 2, 4, 4, 6, 3, 2, 5, 1, 3];
        let owned = random_binned(40, &n_bins, 0.5, 7);
        for block_genes in [1, 2, 3, 5, 12, 20] {
            for policy in [DensePolicy::Auto, DensePolicy::Always, DensePolicy::Never] {
                check_every_tile(&owned, block_genes, policy);
            }
        }
    }

    #[test]
    fn cells_expressing_whole_blocks_count_every_pair_once() {
        let n_bins = [4, 4, 3, 5, 2, 4, 3];
        let owned = random_binned(25, &n_bins, 1.0, 11);
        for block_genes in [1, 3, 4, 7] {
            for policy in [DensePolicy::Auto, DensePolicy::Always, DensePolicy::Never] {
                check_every_tile(&owned, block_genes, policy);
            }
        }
    }
}
