//! Rows of the signed MI matrix: the kernel state, the tile plan and the assembly.
//!
//! A row block `start..stop` against the columns `start..n_genes` is the tiles (row block
//! `bi`, column block `bj >= bi`) of the gene blocks it meets. The tiles of a call run in
//! parallel (rayon); each is counted ([`TileAccumulator::count`]) and then finished (or
//! copied out) at once, straight into its own pieces of the output. Memory is the output
//! plus one tile per thread.

use rayon::prelude::*;

use crate::binned::Binned;
use crate::blocks::{BlockedGenes, GeneBlock, MAX_BLOCK_GENES};
use crate::cooccurrence::TileAccumulator;
use crate::dense::DensePolicy;
use crate::finish::{Count, GeneTables, InconsistentCounts, JointCounts, PairFinisher};

/// Bytes of a tile's counts for dense data: a good part of a core's L2 cache (every
/// count is reached from every cell, so the tile should stay there).
const DENSE_TILE_BYTES: usize = 320 << 10;

/// Most bytes of a tile's counts for sparse data (a cell reaches few counts of a tile).
const SPARSE_TILE_BYTES: usize = 8 << 20;

/// Entries of a block a cell should have on average, so that the cost of visiting a cell
/// (once per tile) is small next to its `entries²` increments.
const ENTRIES_PER_VISIT: f64 = 12.0;

/// Genes per block for genes with up to `stride` nonzero bins and a fraction `density` of
/// their entries expressed: the larger of a tile whose counts, `(block_genes · stride)²`
/// of `u32`, fit in [`DENSE_TILE_BYTES`], and blocks in which a cell has about
/// [`ENTRIES_PER_VISIT`] entries (within [`SPARSE_TILE_BYTES`] of counts).
pub fn default_block_genes(stride: usize, density: f64) -> usize {
    let slots = |bytes: usize| ((bytes / 4) as f64).sqrt() / stride.max(1) as f64;
    let for_cache = slots(DENSE_TILE_BYTES);
    let for_visits = (ENTRIES_PER_VISIT / density.max(1e-9)).min(slots(SPARSE_TILE_BYTES));
    (for_cache.max(for_visits) as usize).clamp(8, MAX_BLOCK_GENES)
}

/// A block of count statistics in the layout of Python's `CountBlock`, for the genes `i`
/// of a row block and `j` of `first..n_genes` (`n_cols` of them), `width` bins per axis:
/// `counts[((r * width + a - 1) * n_cols + c) * width + b - 1]` is `n_ij(a, b)` and
/// `products[r * n_cols + c]` the sum of the pair's value products.
pub struct CountBlockMut<'a> {
    pub counts: &'a mut [i64],
    pub products: &'a mut [f64],
}

/// One tile of a call, row block `bi` × column block `bj`, with the pieces `P` of the
/// output that are its own: those of its wanted row genes `rows` and of its column genes
/// `cols` (the column block, clipped to the call's columns).
struct TileJob<P> {
    bi: usize,
    bj: usize,
    rows: GeneBlock,
    cols: GeneBlock,
    pieces: P,
}

/// What a thread reuses from tile to tile.
struct TileState<'a> {
    tile: TileAccumulator,
    finisher: PairFinisher<'a>,
}

/// A tile's pieces of a count block: one counts piece per row gene and bin, one products
/// piece per row gene.
type CountPieces<'o> = (Vec<&'o mut [i64]>, Vec<&'o mut [f64]>);

/// Everything the MI of any row block needs, built once per run.
#[derive(Debug)]
pub struct MiKernel {
    blocks: BlockedGenes,
    tables: GeneTables,
    signed: bool,
}

impl MiKernel {
    /// The kernel of `binned` (checked), with `block_genes` genes per block; runs on the
    /// current rayon pool.
    pub fn new(binned: &Binned<'_>, signed: bool, block_genes: usize) -> Self {
        Self::with_policy(binned, signed, block_genes, DensePolicy::Auto)
    }

    /// As [`MiKernel::new`], dense blocks counted with bitsets as `policy` says (the
    /// results are the same bit for bit).
    pub fn with_policy(
        binned: &Binned<'_>,
        signed: bool,
        block_genes: usize,
        policy: DensePolicy,
    ) -> Self {
        MiKernel {
            blocks: BlockedGenes::build(binned, block_genes, signed, policy),
            tables: GeneTables::new(binned),
            signed,
        }
    }

    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.tables.n_genes()
    }

    /// Genes per block (and per tile side).
    pub fn block_genes(&self) -> usize {
        self.blocks.block_genes
    }

    /// Bins per axis of a count block: the largest number of nonzero bins, at least 1.
    pub fn count_width(&self) -> usize {
        self.blocks.stride.max(1)
    }

    /// Bytes held (the blocked copy of the entries and the gene tables).
    pub fn nbytes(&self) -> usize {
        self.blocks.nbytes() + self.tables.nbytes()
    }

    /// Signed (or not) MI of the genes `rows` against the genes `rows.lo..n_genes`, into
    /// `out` (row-major `rows.len() × (n_genes - rows.lo)`, every entry written): the
    /// diagonal is 0, the block is symmetric where rows and columns meet. Runs on the
    /// current rayon pool.
    pub fn row_block(&self, rows: GeneBlock, out: &mut [f32]) -> Result<(), String> {
        let n_cols = self.check_rows(rows, out.len(), 1)?;
        let parts = self.row_parts(rows);
        let cols = self.column_blocks(rows);
        let pieces = split_rows(out, &parts, n_cols)
            .into_iter()
            .map(|part| split_columns(part, n_cols, 1, &cols))
            .collect();
        let jobs = self.tile_jobs(&parts, &cols, pieces);
        jobs.into_par_iter()
            .try_for_each_init(|| self.tile_state(), |state, job| self.tile_mi(state, job))?;
        mirror_lower_triangle(out, rows.len(), n_cols);
        Ok(())
    }

    /// The count statistics of the genes `rows` against the genes `rows.lo..n_genes`,
    /// into `block` (its every entry written). Pairs within `rows` are there both ways;
    /// the diagonal holds each gene with itself: its bin counts, its sum of squares (the
    /// products are all 0 when not signed).
    /// Runs on the current rayon pool.
    pub fn count_block(&self, rows: GeneBlock, block: CountBlockMut<'_>) -> Result<(), String> {
        let w = self.count_width();
        let n_cols = self.check_rows(rows, block.counts.len(), w * w)?;
        if block.products.len() != rows.len() * n_cols {
            return Err("the products have the wrong size".into());
        }
        let parts = self.row_parts(rows);
        let cols = self.column_blocks(rows);
        let counts = split_rows(block.counts, &parts, w * n_cols * w);
        let products = split_rows(block.products, &parts, n_cols);
        let pieces = counts
            .into_iter()
            .zip(products)
            .map(|(counts, products)| {
                let counts = split_columns(counts, n_cols * w, w, &cols);
                let products = split_columns(products, n_cols, 1, &cols);
                counts.into_iter().zip(products).collect()
            })
            .collect();
        let jobs = self.tile_jobs(&parts, &cols, pieces);
        jobs.into_par_iter().for_each_init(
            || self.tile_state(),
            |state, job| self.tile_counts(state, job),
        );
        self.complete_count_block(rows, n_cols, block);
        Ok(())
    }

    /// (Signed) MI from a count block of the genes `first..first + n_rows` against
    /// `first..n_genes` (as [`MiKernel::count_block`] makes, possibly summed over other
    /// cells), with this kernel's marginals, into `out` (row-major `n_rows × n_cols`): the
    /// pairs `j > i` from their counts, mirrored where rows and columns meet (as
    /// [`MiKernel::row_block`], bit for bit), the diagonal 0.
    pub fn finish_block(
        &self,
        first: usize,
        counts: &[i64],
        products: &[f64],
        out: &mut [f32],
    ) -> Result<(), String> {
        let w = self.count_width();
        let n_cols = self
            .n_genes()
            .checked_sub(first)
            .ok_or("first is past the last gene")?;
        let n_rows = out.len().checked_div(n_cols).unwrap_or(0);
        if n_rows > n_cols || out.len() != n_rows * n_cols {
            return Err("the output has the wrong size".into());
        }
        if counts.len() != n_rows * w * n_cols * w || products.len() != n_rows * n_cols {
            return Err(format!(
                "the count block of {n_rows} rows must have counts of shape ({n_rows}, {w}, \
                 {n_cols}, {w}) and products of shape ({n_rows}, {n_cols})"
            ));
        }
        if n_cols == 0 {
            return Ok(());
        }
        out.par_chunks_mut(n_cols).enumerate().try_for_each_init(
            || PairFinisher::new(&self.tables.xlogx),
            |finisher, (r, out_row)| {
                out_row[..=r].fill(0.0);
                for c in r + 1..n_cols {
                    let joint = JointCounts {
                        data: &counts[(r * w * n_cols + c) * w..],
                        row_stride: n_cols * w,
                    };
                    let (i, j) = (first + r, first + c);
                    out_row[c] =
                        self.pair_value(finisher, joint, (i, j), products[r * n_cols + c])?;
                }
                Ok::<(), String>(())
            },
        )?;
        mirror_lower_triangle(out, n_rows, n_cols);
        Ok(())
    }

    /// Checks `rows` and an output of `out_len` elements, `per_pair` per pair; returns the
    /// number of columns, `n_genes - rows.lo`.
    fn check_rows(
        &self,
        rows: GeneBlock,
        out_len: usize,
        per_pair: usize,
    ) -> Result<usize, String> {
        let n_genes = self.n_genes();
        if rows.lo > rows.hi || rows.hi > n_genes {
            return Err(format!(
                "rows {}..{} are not within the {n_genes} genes",
                rows.lo, rows.hi
            ));
        }
        let n_cols = n_genes - rows.lo;
        if out_len != rows.len() * n_cols * per_pair {
            return Err("the output has the wrong size".into());
        }
        Ok(n_cols)
    }

    /// The row blocks that `rows` meets, each with its genes in `rows`.
    fn row_parts(&self, rows: GeneBlock) -> Vec<(usize, GeneBlock)> {
        if rows.is_empty() {
            return Vec::new();
        }
        (self.blocks.block_of(rows.lo)..=self.blocks.block_of(rows.hi - 1))
            .map(|bi| (bi, self.blocks.blocks[bi].genes.intersect(rows)))
            .collect()
    }

    /// The column blocks of the columns `rows.lo..n_genes`, clipped to them.
    fn column_blocks(&self, rows: GeneBlock) -> Vec<GeneBlock> {
        let columns = GeneBlock {
            lo: rows.lo,
            hi: self.n_genes(),
        };
        let first = self.blocks.block_of(rows.lo).min(self.blocks.blocks.len());
        self.blocks.blocks[first..]
            .iter()
            .map(|block| block.genes.intersect(columns))
            .collect()
    }

    /// The tiles `(bi, bj >= bi)` of the row `parts`, given the pieces of each part for
    /// each of the column blocks `cols`.
    fn tile_jobs<P>(
        &self,
        parts: &[(usize, GeneBlock)],
        cols: &[GeneBlock],
        pieces: Vec<Vec<P>>,
    ) -> Vec<TileJob<P>> {
        let Some(&(first_block, _)) = parts.first() else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        for (&(bi, rows), part_pieces) in parts.iter().zip(pieces) {
            for (k, pieces) in part_pieces.into_iter().enumerate().skip(bi - first_block) {
                let bj = first_block + k;
                jobs.push(TileJob {
                    bi,
                    bj,
                    rows,
                    cols: cols[k],
                    pieces,
                });
            }
        }
        jobs
    }

    fn tile_state(&self) -> TileState<'_> {
        TileState {
            tile: TileAccumulator::new(self.block_genes(), self.blocks.stride, self.signed),
            finisher: PairFinisher::new(&self.tables.xlogx),
        }
    }

    /// Counts the tile `(bi, bj)`, then calls `take` on every pair `i < j` of it whose row
    /// gene is in `rows` (with the genes and their columns in the tile), and clears the
    /// tile. Stops taking at the first error.
    fn take_pairs<E>(
        &self,
        tile: &mut TileAccumulator,
        (bi, bj): (usize, usize),
        rows: GeneBlock,
        mut take: impl FnMut(&TileAccumulator, (usize, usize), (usize, usize)) -> Result<(), E>,
    ) -> Result<(), E> {
        let (row_block, col_block) = (&self.blocks.blocks[bi], &self.blocks.blocks[bj]);
        tile.count(row_block, col_block);
        let (row_genes, col_genes) = (row_block.genes, col_block.genes);
        let mut result = Ok(());
        for i in row_genes.lo..row_genes.hi {
            let ci = i - row_genes.lo;
            let wanted = rows.lo <= i && i < rows.hi;
            for j in col_genes.lo.max(i + 1)..col_genes.hi {
                let cj = j - col_genes.lo;
                if wanted && result.is_ok() {
                    result = take(tile, (i, ci), (j, cj));
                }
                let t = &self.tables;
                tile.clear_pair(ci, cj, t.nonzero_bins(i), t.nonzero_bins(j));
            }
        }
        tile.clear_products();
        debug_assert!(tile.is_clear());
        result
    }

    /// Fills a tile's pieces of a row block of MI: the pairs `j > i`, 0 elsewhere.
    fn tile_mi(
        &self,
        state: &mut TileState<'_>,
        job: TileJob<Vec<&mut [f32]>>,
    ) -> Result<(), String> {
        let TileJob {
            bi,
            bj,
            rows,
            cols,
            mut pieces,
        } = job;
        for piece in pieces.iter_mut() {
            piece.fill(0.0);
        }
        let finisher = &mut state.finisher;
        self.take_pairs(&mut state.tile, (bi, bj), rows, |tile, (i, ci), (j, cj)| {
            let value =
                self.pair_value(finisher, tile.joint(ci, cj), (i, j), tile.product(ci, cj))?;
            pieces[i - rows.lo][j - cols.lo] = value;
            Ok(())
        })
    }

    /// Copies a tile's counts and products into its pieces of a count block: the pairs
    /// `j > i`, 0 elsewhere.
    fn tile_counts(&self, state: &mut TileState<'_>, job: TileJob<CountPieces<'_>>) {
        let TileJob {
            bi,
            bj,
            rows,
            cols,
            pieces: (mut counts, mut products),
        } = job;
        for piece in counts.iter_mut() {
            piece.fill(0);
        }
        for piece in products.iter_mut() {
            piece.fill(0.0);
        }
        let w = self.count_width();
        let result: Result<(), ()> =
            self.take_pairs(&mut state.tile, (bi, bj), rows, |tile, (i, ci), (j, cj)| {
                let joint = tile.joint(ci, cj);
                let (r, c) = (i - rows.lo, j - cols.lo);
                for a in 0..self.tables.nonzero_bins(i) {
                    let pair_bins = &mut counts[r * w + a][c * w..];
                    let tile_bins = &joint.data[a * joint.row_stride..];
                    for (count, &tile_count) in pair_bins
                        .iter_mut()
                        .zip(tile_bins)
                        .take(self.tables.nonzero_bins(j))
                    {
                        *count = i64::from(tile_count);
                    }
                }
                products[r][c] = tile.product(ci, cj);
                Ok(())
            });
        debug_assert!(result.is_ok());
    }

    /// Fills the pairs of a count block that the tiles leave out: `j < i` within the rows
    /// (the transposes of `i < j`), and each gene with itself.
    fn complete_count_block(&self, rows: GeneBlock, n_cols: usize, block: CountBlockMut<'_>) {
        let w = self.count_width();
        let at = |r: usize, a: usize, c: usize, b: usize| ((r * w + a) * n_cols + c) * w + b;
        for r in 0..rows.len() {
            for c in 0..r {
                for a in 0..w {
                    for b in 0..w {
                        block.counts[at(r, a, c, b)] = block.counts[at(c, b, r, a)];
                    }
                }
                block.products[r * n_cols + c] = block.products[c * n_cols + r];
            }
            let gene = rows.lo + r;
            for (a, &count) in self.tables.marginal(gene).bin_counts.iter().enumerate() {
                block.counts[at(r, a, r, a)] = count;
            }
            if self.signed {
                block.products[r * n_cols + r] = self.tables.sum_of_squares(gene);
            }
        }
    }

    /// The (signed) MI of genes `i != j` from their counts and sum of products.
    fn pair_value<C: Count>(
        &self,
        finisher: &mut PairFinisher<'_>,
        joint: JointCounts<'_, C>,
        (i, j): (usize, usize),
        products: f64,
    ) -> Result<f32, String> {
        let t = &self.tables;
        let mut mi = finisher
            .mutual_information(joint, &t.marginal(i), &t.marginal(j))
            .map_err(|InconsistentCounts| {
                format!("the counts of genes {i} and {j} do not fit their bin counts")
            })?;
        if self.signed && mi != 0.0 {
            mi *= t.correlation_sign(i, j, products);
        }
        Ok(mi as f32)
    }
}

/// Cuts `out` (rows of `row_len` elements) into the rows of each part, in order.
fn split_rows<'o, T>(
    out: &'o mut [T],
    parts: &[(usize, GeneBlock)],
    row_len: usize,
) -> Vec<&'o mut [T]> {
    let mut rest = out;
    parts
        .iter()
        .map(|(_, rows)| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(rows.len() * row_len);
            rest = tail;
            part
        })
        .collect()
}

/// Cuts every row of `out` (rows of `row_len` elements: consecutive column genes of
/// `col_width` elements each, from `cols[0].lo`) at the column blocks `cols`: for each
/// block, its piece of every row, in row order.
fn split_columns<'o, T>(
    out: &'o mut [T],
    row_len: usize,
    col_width: usize,
    cols: &[GeneBlock],
) -> Vec<Vec<&'o mut [T]>> {
    let mut pieces: Vec<Vec<&mut [T]>> = cols.iter().map(|_| Vec::new()).collect();
    for row in out.chunks_exact_mut(row_len) {
        let mut rest = row;
        for (block, block_pieces) in cols.iter().zip(pieces.iter_mut()) {
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(block.len() * col_width);
            block_pieces.push(piece);
            rest = tail;
        }
    }
    pieces
}

/// Copies the upper triangle of the leading `n × n` block of `out` (row-major, `width`
/// columns) onto its lower triangle, and zeroes its diagonal.
fn mirror_lower_triangle(out: &mut [f32], n: usize, width: usize) {
    for r in 0..n {
        for c in 0..r {
            out[r * width + c] = out[c * width + r];
        }
        out[r * width + r] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binned::testing::{xorshift, OwnedBinned};
    use crate::finish::reference::histogram_mi;

    /// Deterministic pseudo-random data with all-zero genes, a gene constant where
    /// expressed, and genes of many bin counts.
    fn example(n_cells: usize, n_genes: usize, density: f64, seed: u64) -> OwnedBinned {
        let mut next = xorshift(seed);
        let n_bins: Vec<i32> = (0..n_genes).map(|g| [1, 2, 3, 5, 8, 11][g % 6]).collect();
        let mut bins = vec![vec![0u8; n_genes]; n_cells];
        let mut values = vec![vec![0.0; n_genes]; n_cells];
        for cell in 0..n_cells {
            for g in 0..n_genes {
                let k = n_bins[g] as u64;
                if k > 1 && (next() % 1000) as f64 / 1000.0 < density {
                    let bin = 1 + (next() % (k - 1)) as u8;
                    bins[cell][g] = bin;
                    // Gene 7 (2 bins) is constant where expressed.
                    values[cell][g] = if g == 7 {
                        3.0
                    } else {
                        f64::from(bin) + (next() % 3) as f64
                    };
                }
            }
        }
        OwnedBinned::from_dense(&bins, &values, &n_bins)
    }

    /// The definition, pair by pair: histogram over the cells expressing either gene, and
    /// the sign of the covariance over all cells.
    fn reference(owned: &OwnedBinned, signed: bool) -> Vec<Vec<f64>> {
        let binned = owned.view();
        let (n_cells, n_genes) = (binned.n_cells(), binned.n_genes());
        let mut dense_bins = vec![vec![0usize; n_genes]; n_cells];
        let mut dense_values = vec![vec![0.0; n_genes]; n_cells];
        for (cell, (bins_row, values_row)) in
            dense_bins.iter_mut().zip(&mut dense_values).enumerate()
        {
            for e in binned.cell_entries(cell) {
                bins_row[binned.genes[e] as usize] = binned.bins[e] as usize;
                values_row[binned.genes[e] as usize] = binned.values[e];
            }
        }
        let mean = |g: usize| dense_values.iter().map(|r| r[g]).sum::<f64>() / n_cells as f64;
        let mut mi = vec![vec![0.0; n_genes]; n_genes];
        for i in 0..n_genes {
            for j in (0..n_genes).filter(|&j| j != i) {
                let (ki, kj) = (binned.n_bins[i] as usize, binned.n_bins[j] as usize);
                let mut joint = vec![vec![0u64; kj]; ki];
                for row in dense_bins.iter().filter(|row| row[i] > 0 || row[j] > 0) {
                    joint[row[i]][row[j]] += 1;
                }
                let mut value = histogram_mi(&joint);
                if signed {
                    let (mean_i, mean_j) = (mean(i), mean(j));
                    let cov: f64 = dense_values
                        .iter()
                        .map(|r| (r[i] - mean_i) * (r[j] - mean_j))
                        .sum();
                    let defined = binned.varies[i] && binned.varies[j] && cov.abs() > 1e-9;
                    value *= if defined { cov.signum() } else { 0.0 };
                }
                mi[i][j] = value;
            }
        }
        mi
    }

    const POLICIES: [DensePolicy; 3] = [DensePolicy::Auto, DensePolicy::Always, DensePolicy::Never];

    fn run(owned: &OwnedBinned, rows: GeneBlock, signed: bool, block_genes: usize) -> Vec<f32> {
        run_with(owned, rows, signed, block_genes, DensePolicy::Auto)
    }

    fn run_with(
        owned: &OwnedBinned,
        rows: GeneBlock,
        signed: bool,
        block_genes: usize,
        policy: DensePolicy,
    ) -> Vec<f32> {
        let binned = owned.view();
        let kernel = MiKernel::with_policy(&binned, signed, block_genes, policy);
        let mut out = vec![f32::NAN; rows.len() * (binned.n_genes() - rows.lo)];
        kernel.row_block(rows, &mut out).unwrap();
        out
    }

    #[test]
    fn rows_equal_the_definition() {
        for (density, seed) in [(0.15, 3), (0.5, 5), (1.0, 9)] {
            let owned = example(60, 23, density, seed);
            assert_eq!(owned.view().check_entries(), Ok(()));
            for (signed, policy) in [false, true]
                .into_iter()
                .flat_map(|s| POLICIES.map(|p| (s, p)))
            {
                let expected = reference(&owned, signed);
                let n_genes = owned.n_bins.len();
                for (lo, hi) in [(0, n_genes), (0, 5), (4, 17), (20, 23), (22, 23)] {
                    let out = run_with(&owned, GeneBlock { lo, hi }, signed, 4, policy);
                    let width = n_genes - lo;
                    for i in lo..hi {
                        for j in lo..n_genes {
                            let got = f64::from(out[(i - lo) * width + j - lo]);
                            assert!(
                                (got - expected[i][j]).abs() < 1e-6,
                                "density {density} signed {signed} {policy:?} ({i}, {j}): {got} != {}",
                                expected[i][j]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn block_size_does_not_change_a_bit() {
        let owned = example(80, 31, 0.3, 13);
        let rows = GeneBlock { lo: 2, hi: 29 };
        let baseline = run(
            &owned,
            rows,
            true,
            default_block_genes(owned.max_bins - 1, 0.3),
        );
        for block_genes in [1, 2, 5, 7, 31, 256] {
            let out = run(&owned, rows, true, block_genes);
            for (k, (a, b)) in out.iter().zip(&baseline).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{block_genes} genes per block, entry {k}"
                );
            }
        }
    }

    #[test]
    fn dense_blocks_give_the_same_bits() {
        // Bitsets or the scan, products as matrix products or pair by pair: the same
        // counts and the same bits. As many cells again expressing nothing (adding nothing)
        // make the dense blocks sparse.
        for (density, seed) in [(0.9, 41), (1.0, 43)] {
            let dense = example(90, 21, density, seed);
            let (mut bins, mut values) = dense_cells(&dense);
            bins.extend(vec![vec![0; 21]; 110]);
            values.extend(vec![vec![0.0; 21]; 110]);
            let sparse = OwnedBinned::from_dense(&bins, &values, &dense.n_bins);
            let rows = GeneBlock { lo: 0, hi: 21 };
            for block_genes in [3, 4, 5, 9, 21] {
                let kernel = MiKernel::new(&dense.view(), true, block_genes);
                assert!(kernel
                    .blocks
                    .blocks
                    .iter()
                    .all(|block| block.dense.is_some()));
                let (expected_counts, expected_products) =
                    count(&dense, rows, block_genes, DensePolicy::Never);
                for policy in [DensePolicy::Always, DensePolicy::Auto] {
                    let got = count(&dense, rows, block_genes, policy);
                    assert_eq!(got.0, expected_counts, "{block_genes} genes, {policy:?}");
                    assert_eq!(bits(&got.1), bits(&expected_products), "{policy:?}");
                }
                let kernel = MiKernel::new(&sparse.view(), true, block_genes);
                assert!(kernel
                    .blocks
                    .blocks
                    .iter()
                    .all(|block| block.dense.is_none()));
                let (_, products) = count(&sparse, rows, block_genes, DensePolicy::Never);
                assert_eq!(
                    bits(&products),
                    bits(&expected_products),
                    "{block_genes} genes"
                );
                let out = run_with(&dense, rows, true, block_genes, DensePolicy::Always);
                let baseline = run_with(&dense, rows, true, block_genes, DensePolicy::Never);
                assert_eq!(bits32(&out), bits32(&baseline), "{block_genes} genes");
            }
        }
    }

    fn bits(values: &[f64]) -> Vec<u64> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    fn bits32(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn thread_count_does_not_change_a_bit() {
        for (density, policy) in [(0.25, DensePolicy::Auto), (1.0, DensePolicy::Always)] {
            let owned = example(70, 40, density, 17);
            let rows = GeneBlock { lo: 0, hi: 40 };
            let in_pool = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| run_with(&owned, rows, true, 3, policy))
            };
            assert_eq!(
                bits32(&in_pool(1)),
                bits32(&in_pool(4)),
                "density {density}"
            );
        }
    }

    #[test]
    fn one_cell_and_empty_inputs() {
        let owned = OwnedBinned::from_dense(&[vec![1, 0, 2]], &[vec![1.0, 0.0, 2.0]], &[2, 1, 3]);
        let out = run(&owned, GeneBlock { lo: 0, hi: 3 }, true, 2);
        assert!(out.iter().all(|&v| v == 0.0), "{out:?}");
        let none = OwnedBinned::from_dense(&[], &[], &[1, 1]);
        assert_eq!(
            run(&none, GeneBlock { lo: 0, hi: 2 }, false, 8),
            vec![0.0; 4]
        );
        assert!(run(&none, GeneBlock { lo: 1, hi: 1 }, false, 8).is_empty());
        let no_genes = OwnedBinned::from_dense(&[vec![]], &[vec![]], &[]);
        assert!(run(&no_genes, GeneBlock { lo: 0, hi: 0 }, true, 8).is_empty());
    }

    /// `count_block` of `rows`, as (counts, products).
    fn count(
        owned: &OwnedBinned,
        rows: GeneBlock,
        block_genes: usize,
        policy: DensePolicy,
    ) -> (Vec<i64>, Vec<f64>) {
        let kernel = MiKernel::with_policy(&owned.view(), true, block_genes, policy);
        let (w, n_cols) = (kernel.count_width(), kernel.n_genes() - rows.lo);
        let mut counts = vec![-1; rows.len() * w * n_cols * w];
        let mut products = vec![f64::NAN; rows.len() * n_cols];
        let block = CountBlockMut {
            counts: &mut counts,
            products: &mut products,
        };
        kernel.count_block(rows, block).unwrap();
        (counts, products)
    }

    #[test]
    fn count_blocks_hold_every_pair() {
        let owned = example(50, 17, 0.4, 21);
        let binned = owned.view();
        let w = owned.max_bins - 1;
        let dense = |cell: usize, gene: usize| {
            binned
                .cell_entries(cell)
                .find(|&e| binned.genes[e] as usize == gene)
        };
        let cases = [(0, 17, 4), (3, 11, 5), (16, 17, 3), (0, 17, 17)];
        for ((lo, hi, block_genes), policy) in
            cases.into_iter().flat_map(|c| POLICIES.map(|p| (c, p)))
        {
            let (counts, products) = count(&owned, GeneBlock { lo, hi }, block_genes, policy);
            let n_cols = 17 - lo;
            for i in lo..hi {
                for j in lo..17 {
                    let (r, c) = (i - lo, j - lo);
                    let mut expected = vec![0i64; w * w];
                    let mut product = 0.0;
                    for cell in 0..binned.n_cells() {
                        if let (Some(p), Some(q)) = (dense(cell, i), dense(cell, j)) {
                            let (a, b) = (binned.bins[p] as usize - 1, binned.bins[q] as usize - 1);
                            expected[a * w + b] += 1;
                            product += binned.values[p] * binned.values[q];
                        }
                    }
                    for a in 0..w {
                        for b in 0..w {
                            let got = counts[((r * w + a) * n_cols + c) * w + b];
                            assert_eq!(got, expected[a * w + b], "({i}, {j}) bins {a}, {b}");
                        }
                    }
                    assert_eq!(products[r * n_cols + c], product, "({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn finishing_a_count_block_equals_the_row_block() {
        let owned = example(60, 23, 0.3, 25);
        let kernel = MiKernel::new(&owned.view(), true, 4);
        for (lo, hi) in [(0, 23), (5, 12), (22, 23)] {
            let rows = GeneBlock { lo, hi };
            let (counts, products) = count(&owned, rows, 4, DensePolicy::Auto);
            let mut finished = vec![f32::NAN; rows.len() * (23 - lo)];
            kernel
                .finish_block(lo, &counts, &products, &mut finished)
                .unwrap();
            let fused = run(&owned, rows, true, 4);
            assert!(finished
                .iter()
                .zip(&fused)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn count_blocks_of_chunks_of_cells_add_up() {
        let owned = example(70, 19, 0.35, 29);
        let binned = owned.view();
        let (bins, values) = dense_cells(&owned);
        let (n_bins, rows) = (&owned.n_bins, GeneBlock { lo: 2, hi: 19 });
        let first = OwnedBinned::from_dense(&bins[..30], &values[..30], n_bins);
        let second = OwnedBinned::from_dense(&bins[30..], &values[30..], n_bins);
        let (mut counts, mut products) = count(&first, rows, 6, DensePolicy::Auto);
        let (counts_2, products_2) = count(&second, rows, 6, DensePolicy::Auto);
        counts.iter_mut().zip(counts_2).for_each(|(a, b)| *a += b);
        products
            .iter_mut()
            .zip(products_2)
            .for_each(|(a, b)| *a += b);
        let whole = MiKernel::new(&binned, true, 6);
        let mut finished = vec![0.0; rows.len() * (19 - rows.lo)];
        whole
            .finish_block(rows.lo, &counts, &products, &mut finished)
            .unwrap();
        let fused = run(&owned, rows, true, 6);
        for (a, b) in finished.iter().zip(&fused) {
            assert!((a - b).abs() < 1e-6, "{a} != {b}");
        }
    }

    #[test]
    fn inconsistent_count_blocks_are_an_error() {
        let owned = example(40, 9, 0.5, 31);
        let kernel = MiKernel::new(&owned.view(), true, 4);
        let (mut counts, products) =
            count(&owned, GeneBlock { lo: 0, hi: 9 }, 4, DensePolicy::Auto);
        let mut out = vec![0.0; 81];
        let w = kernel.count_width();
        counts[(w * 9 + 2) * w] += 1000; // genes (1, 2), bins (1, 1)
        let error = kernel
            .finish_block(0, &counts, &products, &mut out)
            .unwrap_err();
        assert!(error.contains("do not fit"), "{error}");
        let error = kernel
            .finish_block(0, &counts[1..], &products, &mut out)
            .unwrap_err();
        assert!(error.contains("shape"), "{error}");
    }

    /// The bins and values of `owned` as dense cells × genes matrices.
    fn dense_cells(owned: &OwnedBinned) -> (Vec<Vec<u8>>, Vec<Vec<f64>>) {
        let binned = owned.view();
        let n_genes = binned.n_genes();
        let mut bins = vec![vec![0u8; n_genes]; binned.n_cells()];
        let mut values = vec![vec![0.0; n_genes]; binned.n_cells()];
        for cell in 0..binned.n_cells() {
            for e in binned.cell_entries(cell) {
                bins[cell][binned.genes[e] as usize] = binned.bins[e];
                values[cell][binned.genes[e] as usize] = binned.values[e];
            }
        }
        (bins, values)
    }

    #[test]
    fn default_blocks_fit_the_budgets() {
        for stride in [0, 1, 2, 9, 19, 64, 255] {
            for density in [0.0, 0.01, 0.1, 0.5, 1.0] {
                let block_genes = default_block_genes(stride, density);
                let bytes = (block_genes * stride).pow(2) * 4;
                assert!((8..=MAX_BLOCK_GENES).contains(&block_genes));
                assert!(
                    bytes <= SPARSE_TILE_BYTES || block_genes == 8,
                    "{stride}: {block_genes}"
                );
            }
        }
        // Dense data: the tile fits the cache budget; sparse data: larger blocks.
        assert_eq!(default_block_genes(10, 1.0), 28);
        assert_eq!(default_block_genes(10, 0.1), 120);
        assert!(default_block_genes(10, 0.01) <= 144);
    }
}
