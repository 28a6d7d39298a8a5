//! Co-occurrence counting (the docs page "How the scores are computed"): the integer
//! joint histograms `n_ij(a, b)`, `a, b >= 1`, and the sums of products of the sign values
//! `sum_c x_ic x_jc`, of a tile of gene pairs, by one scan over the cells.
//!
//! A tile is a block of row genes × a block of column genes. For each cell, every pair of
//! a row entry and a column entry is one increment: `sum over cells of nnz_I · nnz_J`
//! increments, nothing for cells expressing neither block. On the diagonal (both blocks
//! the same) only pairs of an entry with a later one count, so each pair of genes once.
//!
//! A tile's counts are a `slots(rows) × slots(cols)` matrix (see [`Block::offsets`]), kept
//! as `u16` when no count of the tile can exceed 65,535 (a count is at most the cells of
//! the row gene's bin, and at most those of the column gene's): half the bytes, so that
//! twice the genes' counts stay in a core's cache. Otherwise (more than 65,535 cells in a
//! bin of a gene of each block) they are `u32`. Both give the same integers.

use std::ops::Range;

use crate::blocks::{Block, MAX_BLOCK_GENES};
use crate::count::Count;
use crate::dense::count_pairs;
use crate::finish::JointCounts;
use crate::products::add_dense_products;

/// Row entries of a cell counted together (sharing the reads of its column entries).
const ROW_GROUP: usize = 4;

/// The integer type a tile's counts were kept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// `u16`.
    Narrow,
    /// `u32`.
    Wide,
}

/// The counts and sums of products of one tile, reused from tile to tile.
///
/// `counts[slot_i * row_len + slot_j]` with `row_len` the column block's slots (see
/// [`Block::slots`]), in `narrow` or `wide` as [`TileAccumulator::count`] says;
/// `products[col_i][col_j]`. Only pairs `i < j` are ever counted;
/// [`TileAccumulator::clear`] sets the tile back to 0 once its pairs are taken.
pub struct TileAccumulator {
    /// Room for a tile of up to this many slots by as many.
    max_slots: usize,
    /// Tiles whose counts are at most this are counted in `u16`.
    narrow_limit: u64,
    narrow: Vec<u16>,
    /// Made on the first tile that needs it.
    wide: Vec<u32>,
    products: Vec<ProductRow>,
    /// The column (in its block) of each slot of the current column block.
    col_of: Box<ColumnOf>,
}

/// The column (in its block) of each slot of a block: indexed by a `u16` slot, it is
/// always in range.
type ColumnOf = [u8; 1 << 16];

/// The counts of a counted tile, of one width, and its sums of products.
pub struct TileCounts<'t, T> {
    counts: &'t [T],
    row_len: usize,
    products: &'t [ProductRow],
}

impl<'t, T: Count> TileCounts<'t, T> {
    /// The counts of the gene in column `col_i` of the row block `rows` against the gene
    /// in column `col_j` of the column block `cols` (none when the row gene has no
    /// nonzero bin, whose first slot may be past the tile).
    pub fn joint(
        &self,
        (rows, col_i): (&Block, usize),
        (cols, col_j): (&Block, usize),
    ) -> JointCounts<'t, T> {
        let start =
            usize::from(rows.offsets[col_i]) * self.row_len + usize::from(cols.offsets[col_j]);
        JointCounts {
            data: self.counts.get(start..).unwrap_or(&[]),
            row_stride: self.row_len,
        }
    }

    /// `sum_c x_ic x_jc` over the cells expressing both, added in increasing cell order
    /// (0 when the tile does not sum products).
    pub fn product(&self, col_i: usize, col_j: usize) -> f64 {
        self.products.get(col_i).map_or(0.0, |row| row[col_j])
    }
}

impl TileAccumulator {
    /// Room for two blocks of up to `block_genes` genes and `max_slots` slots; sums of
    /// products only `with_products`.
    pub fn new(block_genes: usize, max_slots: usize, with_products: bool) -> Self {
        Self::with_narrow_limit(block_genes, max_slots, with_products, u16::MAX.into())
    }

    /// As [`TileAccumulator::new`], tiles counted in `u16` only when no count exceeds
    /// `narrow_limit` (at most 65,535; lower it to test the `u32` tiles on small data).
    pub fn with_narrow_limit(
        block_genes: usize,
        max_slots: usize,
        with_products: bool,
        narrow_limit: u64,
    ) -> Self {
        TileAccumulator {
            max_slots,
            narrow_limit: narrow_limit.min(u16::MAX.into()),
            narrow: vec![0; max_slots * max_slots],
            wide: Vec::new(),
            products: if with_products {
                vec![[0.0; PRODUCT_ROW]; block_genes]
            } else {
                Vec::new()
            },
            col_of: vec![0; 1 << 16]
                .into_boxed_slice()
                .try_into()
                .expect("1 << 16 columns"),
        }
    }

    /// The width of the counts of the tile `rows × cols`: `u16` when no count can exceed
    /// the limit.
    pub fn width(&self, rows: &Block, cols: &Block) -> Width {
        if rows.max_bin_count.min(cols.max_bin_count) <= self.narrow_limit {
            Width::Narrow
        } else {
            Width::Wide
        }
    }

    /// Counts the tile: pairs of an entry of `rows` with an entry of `cols` (with a later
    /// entry when `rows` and `cols` are the same block), and their sums of products, in
    /// counts of the width it returns. Tiles of two dense blocks are counted with their
    /// bitsets when they have them, and their products summed as a matrix product
    /// (faster, and the same sums bit for bit). Needs a clear tile.
    pub fn count(&mut self, rows: &Block, cols: &Block) -> Width {
        let width = self.width(rows, cols);
        self.col_of[..cols.slot_cols.len()].copy_from_slice(&cols.slot_cols);
        let col_of = &*self.col_of;
        match width {
            Width::Narrow => count_tile(&mut self.narrow, &mut self.products, col_of, rows, cols),
            Width::Wide => {
                if self.wide.is_empty() {
                    self.wide = vec![0; self.max_slots * self.max_slots];
                }
                count_tile(&mut self.wide, &mut self.products, col_of, rows, cols);
            }
        }
        width
    }

    /// The `u16` counts of a tile `rows × cols` counted narrow.
    pub fn narrow(&self, cols: &Block) -> TileCounts<'_, u16> {
        self.counts(&self.narrow, cols)
    }

    /// The `u32` counts of a tile `rows × cols` counted wide.
    pub fn wide(&self, cols: &Block) -> TileCounts<'_, u32> {
        self.counts(&self.wide, cols)
    }

    fn counts<'t, T>(&'t self, counts: &'t [T], cols: &Block) -> TileCounts<'t, T> {
        TileCounts {
            counts,
            row_len: cols.n_slots(),
            products: &self.products,
        }
    }

    /// Sets the tile `rows × cols`, counted in `width`, back to 0.
    pub fn clear(&mut self, width: Width, rows: &Block, cols: &Block) {
        let used = rows.n_slots() * cols.n_slots();
        match width {
            Width::Narrow => self.narrow[..used].fill(0),
            Width::Wide => self.wide[..used].fill(0),
        }
        let (n_rows, n_cols) = (rows.genes.len(), cols.genes.len());
        for row in self.products.iter_mut().take(n_rows) {
            row[..n_cols].fill(0.0);
        }
    }

    /// Whether every count and sum of products is 0 (for tests and debug checks).
    pub fn is_clear(&self) -> bool {
        self.narrow.iter().all(|&c| c == 0)
            && self.wide.iter().all(|&c| c == 0)
            && self.products.iter().flatten().all(|&s| s == 0.0)
    }
}

/// Counts the tile `rows × cols` into `counts` (and its sums of products into `products`
/// unless it is empty).
fn count_tile<T: Count>(
    counts: &mut [T],
    products: &mut [ProductRow],
    col_of: &ColumnOf,
    rows: &Block,
    cols: &Block,
) {
    let same_block = rows.genes == cols.genes;
    let with_products = !products.is_empty();
    let row_len = cols.n_slots();
    match (&rows.dense, &cols.dense) {
        (Some(dense_rows), Some(dense_cols)) => {
            if dense_rows.has_bitsets() && dense_cols.has_bitsets() {
                count_pairs(dense_rows, dense_cols, same_block, counts, row_len);
            } else {
                scan(counts, &mut [], col_of, rows, cols);
            }
            if with_products {
                let width = PRODUCT_ROW;
                let sums = products.as_flattened_mut();
                add_dense_products(sums, width, dense_rows, dense_cols, same_block);
            }
        }
        _ => scan(counts, products, col_of, rows, cols),
    }
}

/// A row of a tile's sums of products: one per column gene (a gene's column, `u8`, is
/// always within it).
pub type ProductRow = [f64; PRODUCT_ROW];

/// Sums of products per row: room for every column gene, and one more cache line so that
/// the rows of a tile do not all fall in the same cache sets.
const PRODUCT_ROW: usize = MAX_BLOCK_GENES + 8;

/// Where a scan adds: the counts (rows of `row_len`) and the sums of products (none when
/// empty).
struct Sums<'s, T> {
    counts: &'s mut [T],
    row_len: usize,
    products: &'s mut [ProductRow],
    /// The column of each slot of the column block.
    col_of: &'s ColumnOf,
}

/// The co-occurrence scan: adds every cell's pairs of entries (and their products unless
/// `products` is empty).
fn scan<T: Count>(
    counts: &mut [T],
    products: &mut [ProductRow],
    col_of: &ColumnOf,
    rows: &Block,
    cols: &Block,
) {
    let same_block = rows.genes == cols.genes;
    let mut sums = Sums {
        counts,
        row_len: cols.n_slots(),
        products,
        col_of,
    };
    let (mut p, mut q) = (0usize, 0usize);
    for (&n_rows, &n_cols) in rows.per_cell.iter().zip(&cols.per_cell) {
        let (n_rows, n_cols) = (usize::from(n_rows), usize::from(n_cols));
        if n_rows > 0 && n_cols > 0 {
            if same_block {
                // Each row entry with the later entries only.
                for k in p..p + n_rows - 1 {
                    add_cell(&mut sums, rows, k..k + 1, cols, k + 1..q + n_cols);
                }
            } else {
                add_cell(&mut sums, rows, p..p + n_rows, cols, q..q + n_cols);
            }
        }
        p += n_rows;
        q += n_cols;
    }
}

/// Adds the pairs of the entries `row_entries` of `rows` with the entries `col_entries`
/// of `cols`, all of one cell, by groups of [`ROW_GROUP`] row entries that share the
/// reads of the column entries.
#[inline(always)]
fn add_cell<T: Count>(
    sums: &mut Sums<'_, T>,
    rows: &Block,
    row_entries: Range<usize>,
    cols: &Block,
    col_entries: Range<usize>,
) {
    let mut p = row_entries.start;
    while p + ROW_GROUP <= row_entries.end {
        add_pairs::<T, ROW_GROUP>(sums, rows, p, cols, col_entries.clone());
        p += ROW_GROUP;
    }
    match row_entries.end - p {
        0 => {}
        1 => add_pairs::<T, 1>(sums, rows, p, cols, col_entries),
        2 => add_pairs::<T, 2>(sums, rows, p, cols, col_entries),
        _ => add_pairs::<T, 3>(sums, rows, p, cols, col_entries),
    }
}

/// Adds the pairs of the `N` row entries `p..p + N` of `rows` with the column entries
/// `col_entries` of `cols` (of one cell): one to their counts, and the product of their
/// values to their sums of products. The rows are distinct: a cell's entries have
/// distinct slots and genes.
#[inline(always)]
fn add_pairs<T: Count, const N: usize>(
    sums: &mut Sums<'_, T>,
    rows: &Block,
    p: usize,
    cols: &Block,
    col_entries: Range<usize>,
) {
    let row_slots: [u16; N] = std::array::from_fn(|k| rows.slots[p + k]);
    // Increasing: a cell's slots increase along its entries.
    let count_rows: [usize; N] = row_slots.map(|slot| usize::from(slot) * sums.row_len);
    assert!(count_rows.windows(2).all(|w| w[0] < w[1]));
    let col_slots = &cols.slots[col_entries.clone()];
    let counts = &mut *sums.counts;
    if sums.products.is_empty() {
        for &slot in col_slots {
            for &row in count_rows.iter().rev() {
                counts[row + usize::from(slot)] += T::ONE;
            }
        }
        return;
    }
    let xs: [f64; N] = std::array::from_fn(|k| rows.values[p + k]);
    let genes: [usize; N] = row_slots.map(|slot| rows.col_of(slot));
    let mut products = sums
        .products
        .get_disjoint_mut(genes)
        .expect("a cell's entries have distinct genes");
    let ys = &cols.values[col_entries];
    for (&slot, &y) in col_slots.iter().zip(ys) {
        let col = sums.col_of[usize::from(slot)];
        for &row in count_rows.iter().rev() {
            counts[row + usize::from(slot)] += T::ONE;
        }
        for (sums, &x) in products.iter_mut().zip(&xs) {
            sums[usize::from(col)] += x * y;
        }
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

    /// Counts every tile of `owned` and checks every pair against [`direct`]; tiles
    /// counted in `u16` unless `narrow_limit` is below their counts.
    fn check_every_tile(
        owned: &OwnedBinned,
        block_genes: usize,
        policy: DensePolicy,
        narrow_limit: u64,
    ) {
        let binned = owned.view();
        let blocked = BlockedGenes::build(&binned, block_genes, true, policy);
        let mut tile =
            TileAccumulator::with_narrow_limit(block_genes, blocked.max_slots, true, narrow_limit);
        for (bi, rows) in blocked.blocks.iter().enumerate() {
            for cols in &blocked.blocks[bi..] {
                let width = tile.count(rows, cols);
                match width {
                    Width::Narrow => check_tile(&binned, &tile.narrow(cols), rows, cols),
                    Width::Wide => check_tile(&binned, &tile.wide(cols), rows, cols),
                }
                tile.clear(width, rows, cols);
                assert!(
                    tile.is_clear(),
                    "block {block_genes}: counts left after clearing"
                );
            }
        }
    }

    fn check_tile<T: Count + std::fmt::Debug>(
        binned: &Binned<'_>,
        tile: &TileCounts<'_, T>,
        rows: &Block,
        cols: &Block,
    ) {
        for i in rows.genes.lo..rows.genes.hi {
            for j in cols.genes.lo.max(i + 1)..cols.genes.hi {
                let (ci, cj) = (i - rows.genes.lo, j - cols.genes.lo);
                let (expected, products) = direct(binned, i, j);
                let joint = tile.joint((rows, ci), (cols, cj));
                for (a, row) in expected.iter().enumerate() {
                    let got: Vec<u32> = joint.data[a * joint.row_stride..][..row.len()]
                        .iter()
                        .map(|c| c.get())
                        .collect();
                    assert_eq!(got, &row[..], "pair ({i}, {j}), bin {a}");
                }
                assert_eq!(
                    tile.product(ci, cj).to_bits(),
                    products.to_bits(),
                    "pair ({i}, {j})"
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
                for narrow_limit in [u64::MAX, 0] {
                    check_every_tile(&owned, block_genes, policy, narrow_limit);
                }
            }
        }
    }

    #[test]
    fn cells_expressing_whole_blocks_count_every_pair_once() {
        let n_bins = [4, 4, 3, 5, 2, 4, 3];
        let owned = random_binned(25, &n_bins, 1.0, 11);
        for block_genes in [1, 3, 4, 7] {
            for policy in [DensePolicy::Auto, DensePolicy::Always, DensePolicy::Never] {
                for narrow_limit in [u64::MAX, 0] {
                    check_every_tile(&owned, block_genes, policy, narrow_limit);
                }
            }
        }
    }
}
