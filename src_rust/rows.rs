//! Scores of row blocks and rectangles: the kernel state, the tile plan and the assembly.
//!
//! A request, the genes `rows` against the genes `first..n_genes`, is the tiles (row block
//! `bi`, column block `bj >= bi`) of the gene blocks it meets. The tiles of a call run in
//! parallel (rayon); each is counted ([`TileAccumulator::count`]) and its pairs finished at
//! once ([`PairFinisher::finish`]), straight into its own pieces of the outputs. Memory is
//! the outputs plus one tile per thread. The results do not depend on the blocks nor on
//! the threads, bit for bit: every count is an integer, every sum of products is added in
//! increasing cell order, and every pair is finished on its own.

use rayon::prelude::*;

use crate::binned::Binned;
use crate::blocks::{Block, BlockedGenes, GeneBlock, MAX_BLOCK_GENES};
use crate::chi2::chi2_sf;
use crate::cooccurrence::{TileAccumulator, TileCounts, Width};
use crate::count::Count;
use crate::dense::DensePolicy;
use crate::finish::{GeneTables, PairFinisher, Scoring};

/// Bytes of a tile's counts for dense data: a good part of a core's L2 cache (every
/// count is reached from every cell, so the tile should stay there).
const DENSE_TILE_BYTES: usize = 160 << 10;

/// Most bytes of a tile's counts for sparse data (a cell reaches few counts of a tile).
const SPARSE_TILE_BYTES: usize = 1 << 20;

/// Entries of a block a cell should have on average, so that the cost of visiting a cell
/// (once per tile) is small next to its `entries²` increments.
const ENTRIES_PER_VISIT: f64 = 12.0;

/// Genes per block for genes with `mean_bins` nonzero bins on average and a fraction
/// `density` of their entries expressed: the larger of a tile whose counts,
/// `(block_genes · mean_bins)²` of `u16`, fit in [`DENSE_TILE_BYTES`], and blocks in which
/// a cell has about [`ENTRIES_PER_VISIT`] entries (within [`SPARSE_TILE_BYTES`] of
/// counts).
pub fn default_block_genes(mean_bins: f64, density: f64) -> usize {
    let slots = |bytes: usize| ((bytes / 2) as f64).sqrt() / mean_bins.max(1.0);
    let for_cache = slots(DENSE_TILE_BYTES);
    let for_visits = (ENTRIES_PER_VISIT / density.max(1e-9)).min(slots(SPARSE_TILE_BYTES));
    (for_cache.max(for_visits) as usize).clamp(8, MAX_BLOCK_GENES)
}

/// [`default_block_genes`] of `binned`: from its genes' mean number of nonzero bins and
/// its share of expressed entries.
pub fn default_block_genes_of(binned: &Binned<'_>) -> usize {
    let n_genes = binned.n_genes().max(1);
    let slots: usize = binned.n_bins.iter().map(|&k| k.max(1) as usize - 1).sum();
    let density = binned.genes.len() as f64 / (binned.n_cells() * n_genes).max(1) as f64;
    default_block_genes(slots as f64 / n_genes as f64, density)
}

/// The outputs of a request, row-major `rows × columns`: the MI, and with a test the
/// statistic and the degrees of freedom, or the p-values `chi2.sf(statistic, dof)` as
/// `f32` (1 on a row block's diagonal), or both (`None`: not wanted).
pub struct ScoresMut<'o> {
    pub mi: &'o mut [f32],
    pub statistic: Option<&'o mut [f64]>,
    pub dof: Option<&'o mut [i32]>,
    pub pvalues: Option<&'o mut [f32]>,
}

/// A tile's pieces of the outputs: one per wanted row gene (empty for an output that is
/// not wanted).
struct Pieces<'o> {
    mi: Vec<&'o mut [f32]>,
    statistic: Vec<&'o mut [f64]>,
    dof: Vec<&'o mut [i32]>,
    pvalues: Vec<&'o mut [f32]>,
}

/// For each row part and column block, its pieces of every output.
struct Splits<'o> {
    mi: Split<'o, f32>,
    statistic: Split<'o, f64>,
    dof: Split<'o, i32>,
    pvalues: Split<'o, f32>,
}

/// One tile of a call, row block `bi` × column block `bj`, with the pieces of the outputs
/// that are its own: those of its wanted row genes `rows` and column genes `cols` (the
/// blocks clipped to the call's rows and columns).
struct TileJob<'o> {
    bi: usize,
    bj: usize,
    rows: GeneBlock,
    cols: GeneBlock,
    pieces: Pieces<'o>,
}

/// What a thread reuses from tile to tile.
struct TileState<'a> {
    tile: TileAccumulator,
    finisher: PairFinisher<'a>,
}

/// Everything the scores of any request need, built once per input.
#[derive(Debug)]
pub struct ScoreKernel {
    blocks: BlockedGenes,
    tables: GeneTables,
    scoring: Scoring,
    /// Tiles whose counts are at most this are counted in `u16` (65,535 but in tests).
    narrow_limit: u64,
}

impl ScoreKernel {
    /// The kernel of `binned` (checked) under `scoring`, with `block_genes` genes per
    /// block; runs on the current rayon pool.
    pub fn new(binned: &Binned<'_>, scoring: Scoring, block_genes: usize) -> Self {
        Self::with_policy(binned, scoring, block_genes, DensePolicy::Auto)
    }

    /// As [`ScoreKernel::new`], dense blocks counted with bitsets as `policy` says (the
    /// results are the same bit for bit).
    pub fn with_policy(
        binned: &Binned<'_>,
        scoring: Scoring,
        block_genes: usize,
        policy: DensePolicy,
    ) -> Self {
        ScoreKernel {
            blocks: BlockedGenes::build(binned, block_genes, scoring.signed, policy),
            tables: GeneTables::new(binned),
            scoring,
            narrow_limit: u16::MAX.into(),
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

    /// The scoring choice.
    pub fn scoring(&self) -> Scoring {
        self.scoring
    }

    /// Bytes held (the blocked copy of the entries and the gene tables).
    pub fn nbytes(&self) -> usize {
        self.blocks.nbytes() + self.tables.nbytes()
    }

    /// The scores of the genes `rows` against the genes `first..n_genes`, into `out`
    /// (every entry written). `first == rows.lo` is a row block: the pairs within `rows`
    /// are there both ways (left of the diagonal, the mirror of the entry above it) and
    /// the diagonal is 0; otherwise `first >= rows.hi`, a rectangle of disjoint genes.
    /// Runs on the current rayon pool.
    pub fn scores(&self, rows: GeneBlock, first: usize, out: ScoresMut<'_>) -> Result<(), String> {
        let n_cols = self.check(rows, first, &out)?;
        if rows.is_empty() || n_cols == 0 {
            return Ok(());
        }
        let ScoresMut {
            mi,
            mut statistic,
            mut dof,
            mut pvalues,
        } = out;
        let parts = self.row_parts(rows);
        let cols = self.column_blocks(first);
        let splits = Splits {
            mi: split(Some(&mut *mi), &parts, &cols, n_cols),
            statistic: split(statistic.as_deref_mut(), &parts, &cols, n_cols),
            dof: split(dof.as_deref_mut(), &parts, &cols, n_cols),
            pvalues: split(pvalues.as_deref_mut(), &parts, &cols, n_cols),
        };
        let jobs = self.tile_jobs(&parts, &cols, splits);
        jobs.into_par_iter()
            .for_each_init(|| self.tile_state(), |state, job| self.tile(state, job));
        if first == rows.lo {
            mirror(mi, rows.len(), n_cols, 0.0);
            if let Some(statistic) = statistic {
                mirror(statistic, rows.len(), n_cols, 0.0);
            }
            if let Some(dof) = dof {
                mirror(dof, rows.len(), n_cols, 0);
            }
            if let Some(pvalues) = pvalues {
                mirror(pvalues, rows.len(), n_cols, 1.0);
            }
        }
        Ok(())
    }

    /// Checks a request and its outputs; the number of columns, `n_genes - first`.
    fn check(&self, rows: GeneBlock, first: usize, out: &ScoresMut<'_>) -> Result<usize, String> {
        let n_genes = self.n_genes();
        if rows.lo > rows.hi || rows.hi > n_genes {
            return Err(format!(
                "rows {}..{} are not within the {n_genes} genes",
                rows.lo, rows.hi
            ));
        }
        if first != rows.lo && !(rows.hi <= first && first <= n_genes) {
            return Err(format!(
                "columns from {first} must start at the rows' first gene ({}) or after their \
                 last ({}), within 0..{n_genes}",
                rows.lo, rows.hi
            ));
        }
        let size = rows.len() * (n_genes - first);
        if out.mi.len() != size {
            return Err("the output has the wrong size".into());
        }
        let statistic = out.statistic.as_ref().map(|s| s.len());
        let dof = out.dof.as_ref().map(|d| d.len());
        let pvalues = out.pvalues.as_ref().map(|p| p.len());
        let test_outputs = match (statistic, dof, pvalues) {
            (None, None, None) => false,
            (Some(s), Some(d), None) => s == size && d == size,
            (None, None, Some(p)) => p == size,
            (Some(s), Some(d), Some(p)) => s == size && d == size && p == size,
            _ => return Err("the statistic and dof outputs come together".into()),
        };
        if self.scoring.g_test && !test_outputs {
            return Err(
                "a test needs the statistic and dof outputs or the p-values, of the scores' \
                 size"
                    .into(),
            );
        }
        if !self.scoring.g_test && (statistic.is_some() || pvalues.is_some()) {
            return Err("only a test has statistic, dof and p-value outputs".into());
        }
        Ok(n_genes - first)
    }

    /// The row blocks that `rows` meets, each with its genes in `rows`.
    fn row_parts(&self, rows: GeneBlock) -> Vec<(usize, GeneBlock)> {
        (self.blocks.block_of(rows.lo)..=self.blocks.block_of(rows.hi - 1))
            .map(|bi| (bi, self.blocks.blocks[bi].genes.intersect(rows)))
            .collect()
    }

    /// The column blocks of the columns `first..n_genes` (some), clipped to them.
    fn column_blocks(&self, first: usize) -> Vec<(usize, GeneBlock)> {
        let columns = GeneBlock {
            lo: first,
            hi: self.n_genes(),
        };
        (self.blocks.block_of(first)..self.blocks.blocks.len())
            .map(|bj| (bj, self.blocks.blocks[bj].genes.intersect(columns)))
            .collect()
    }

    /// The tiles `(bi, bj >= bi)` of the row `parts` and column blocks `cols`, with their
    /// pieces of the outputs (`splits`: for each part and column block, the rows' pieces
    /// of each output).
    fn tile_jobs<'o>(
        &self,
        parts: &[(usize, GeneBlock)],
        cols: &[(usize, GeneBlock)],
        splits: Splits<'o>,
    ) -> Vec<TileJob<'o>> {
        let Splits {
            mi,
            statistic,
            dof,
            pvalues,
        } = splits;
        let mut jobs = Vec::new();
        let per_part = mi.into_iter().zip(statistic).zip(dof).zip(pvalues);
        for (&(bi, rows), (((mi, statistic), dof), pvalues)) in parts.iter().zip(per_part) {
            let per_block = mi.into_iter().zip(statistic).zip(dof).zip(pvalues);
            for (&(bj, cols), (((mi, statistic), dof), pvalues)) in cols.iter().zip(per_block) {
                if bj < bi {
                    continue; // left of a row block's diagonal: mirrored
                }
                let pieces = Pieces {
                    mi,
                    statistic,
                    dof,
                    pvalues,
                };
                jobs.push(TileJob {
                    bi,
                    bj,
                    rows,
                    cols,
                    pieces,
                });
            }
        }
        jobs
    }

    fn tile_state(&self) -> TileState<'_> {
        TileState {
            tile: TileAccumulator::with_narrow_limit(
                self.block_genes(),
                self.blocks.max_slots,
                self.scoring.signed,
                self.narrow_limit,
            ),
            finisher: PairFinisher::new(&self.tables, self.scoring),
        }
    }

    /// Counts a tile and finishes it into its pieces of the outputs: the pairs `j > i` of
    /// its rows and columns (the others are a row block's mirrored part); then clears it.
    fn tile(&self, state: &mut TileState<'_>, job: TileJob<'_>) {
        let (row_block, col_block) = (&self.blocks.blocks[job.bi], &self.blocks.blocks[job.bj]);
        let tile = &mut state.tile;
        let width = tile.count(row_block, col_block);
        let blocks = (row_block, col_block);
        match width {
            Width::Narrow => {
                self.finish_tile(&tile.narrow(col_block), blocks, &mut state.finisher, job)
            }
            Width::Wide => {
                self.finish_tile(&tile.wide(col_block), blocks, &mut state.finisher, job)
            }
        }
        tile.clear(width, row_block, col_block);
        debug_assert!(tile.is_clear());
    }

    /// Finishes the pairs `i < j` of a counted tile whose row gene is in the job's rows
    /// and column gene in its columns, into the job's pieces of the outputs.
    fn finish_tile<T: Count>(
        &self,
        counts: &TileCounts<'_, T>,
        (row_block, col_block): (&Block, &Block),
        finisher: &mut PairFinisher<'_>,
        job: TileJob<'_>,
    ) {
        let TileJob {
            rows,
            cols,
            mut pieces,
            ..
        } = job;
        let (row_genes, col_genes) = (row_block.genes, col_block.genes);
        for i in rows.lo..rows.hi {
            let ci = i - row_genes.lo;
            let r = i - rows.lo;
            for j in cols.lo.max(i + 1)..cols.hi {
                let cj = j - col_genes.lo;
                let joint = counts.joint((row_block, ci), (col_block, cj));
                let scores = finisher.finish(joint, (i, j), counts.product(ci, cj));
                let c = j - cols.lo;
                pieces.mi[r][c] = scores.mi;
                if let Some(row) = pieces.statistic.get_mut(r) {
                    row[c] = scores.statistic;
                }
                if let Some(row) = pieces.dof.get_mut(r) {
                    row[c] = scores.dof;
                }
                if let Some(row) = pieces.pvalues.get_mut(r) {
                    row[c] = chi2_sf(scores.statistic, scores.dof.unsigned_abs()) as f32;
                }
            }
        }
    }
}

/// For each row part and column block, the rows' pieces of one output.
type Split<'o, T> = Vec<Vec<Vec<&'o mut [T]>>>;

/// Cuts `out` (row-major, `n_cols` columns from `cols[0]`'s first gene) into the pieces of
/// each row part and column block; pieces with no row when there is no such output.
fn split<'o, T>(
    out: Option<&'o mut [T]>,
    parts: &[(usize, GeneBlock)],
    cols: &[(usize, GeneBlock)],
    n_cols: usize,
) -> Split<'o, T> {
    let Some(out) = out else {
        return parts
            .iter()
            .map(|_| cols.iter().map(|_| Vec::new()).collect())
            .collect();
    };
    let mut rest = out;
    parts
        .iter()
        .map(|(_, rows)| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(rows.len() * n_cols);
            rest = tail;
            let mut pieces: Vec<Vec<&mut [T]>> = cols.iter().map(|_| Vec::new()).collect();
            for row in part.chunks_exact_mut(n_cols) {
                let mut rest = row;
                for ((_, block), block_pieces) in cols.iter().zip(pieces.iter_mut()) {
                    let (piece, tail) = std::mem::take(&mut rest).split_at_mut(block.len());
                    block_pieces.push(piece);
                    rest = tail;
                }
            }
            pieces
        })
        .collect()
}

/// Side of the square tiles in which [`mirror`] copies (two of them stay in cache).
const MIRROR_TILE: usize = 64;

/// Copies the upper triangle of the leading `n × n` block of `out` (row-major, `width`
/// columns) onto its lower triangle, a tile at a time, and sets its diagonal to
/// `diagonal`.
pub fn mirror<T: Copy>(out: &mut [T], n: usize, width: usize, diagonal: T) {
    for r0 in (0..n).step_by(MIRROR_TILE) {
        for c0 in (0..=r0).step_by(MIRROR_TILE) {
            for r in r0..(r0 + MIRROR_TILE).min(n) {
                for c in c0..(c0 + MIRROR_TILE).min(r) {
                    out[r * width + c] = out[c * width + r];
                }
            }
        }
        for r in r0..(r0 + MIRROR_TILE).min(n) {
            out[r * width + r] = diagonal;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binned::testing::{xorshift, OwnedBinned};
    use crate::finish::reference::{g_test, histogram_mi};

    /// Every scoring choice, unsigned and signed.
    fn every_scoring() -> Vec<Scoring> {
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

    /// The recommended score: every correction and the test.
    fn recommended() -> Scoring {
        Scoring {
            signed: true,
            include_zeros: true,
            miller_madow: true,
            g_test: true,
            sign_tolerance: 2f64.powi(-32),
        }
    }

    /// Deterministic pseudo-random data with all-zero genes, a gene constant where
    /// expressed, a gene expressed in every cell, and genes of many bin counts.
    fn example(n_cells: usize, n_genes: usize, density: f64, seed: u64) -> OwnedBinned {
        let mut next = xorshift(seed);
        let n_bins: Vec<i32> = (0..n_genes).map(|g| [1, 2, 3, 5, 8, 11][g % 6]).collect();
        let mut bins = vec![vec![0u8; n_genes]; n_cells];
        let mut values = vec![vec![0.0; n_genes]; n_cells];
        for cell in 0..n_cells {
            for g in 0..n_genes {
                let k = n_bins[g] as u64;
                let expressed = g == 9 || (next() % 1000) as f64 / 1000.0 < density;
                if k > 1 && expressed {
                    let bin = 1 + (next() % (k - 1)) as u8;
                    bins[cell][g] = bin;
                    // Gene 7 (2 bins) is constant where expressed; small integers
                    // otherwise, so that covariances are exact.
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

    /// The scores of one pair by the definition.
    #[derive(Clone, Copy, Debug, Default)]
    struct Expected {
        mi: f64,
        statistic: f64,
        dof: i32,
    }

    /// The definition, pair by pair: the full histogram of the pair over all cells, its MI
    /// under the scoring choice and its G-test, and the sign of the (two-pass) covariance.
    fn reference(owned: &OwnedBinned, scoring: Scoring) -> Vec<Vec<Expected>> {
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
        let mut expected = vec![vec![Expected::default(); n_genes]; n_genes];
        for i in 0..n_genes {
            for j in (0..n_genes).filter(|&j| j != i) {
                let (ki, kj) = (binned.n_bins[i] as usize, binned.n_bins[j] as usize);
                let mut joint = vec![vec![0u64; kj]; ki];
                for row in &dense_bins {
                    joint[row[i]][row[j]] += 1;
                }
                let mut mi = histogram_mi(&joint, scoring.include_zeros, scoring.miller_madow);
                if scoring.signed {
                    let (mean_i, mean_j) = (mean(i), mean(j));
                    let cov: f64 = dense_values
                        .iter()
                        .map(|r| (r[i] - mean_i) * (r[j] - mean_j))
                        .sum();
                    let defined = binned.varies[i] && binned.varies[j] && cov.abs() > 1e-9;
                    mi *= if defined { cov.signum() } else { 0.0 };
                }
                let (statistic, dof) = if scoring.g_test && n_cells > 0 {
                    g_test(&joint)
                } else {
                    (0.0, 0)
                };
                expected[i][j] = Expected { mi, statistic, dof };
            }
        }
        expected
    }

    const POLICIES: [DensePolicy; 3] = [DensePolicy::Auto, DensePolicy::Always, DensePolicy::Never];

    /// The outputs of a request, as owned arrays (statistic and dof empty without a test).
    #[derive(Debug, PartialEq)]
    struct Outputs {
        mi: Vec<u32>,
        statistic: Vec<u64>,
        dof: Vec<i32>,
    }

    /// The scores of the genes `rows` against `first..`, every entry first poisoned; with
    /// a test, the p-values are asked for too, and checked to be `chi2_sf` of the
    /// statistic and dof, bit for bit, and to be the same when asked for alone.
    fn run(kernel: &ScoreKernel, rows: GeneBlock, first: usize) -> (Vec<f32>, Vec<f64>, Vec<i32>) {
        let size = rows.len() * (kernel.n_genes() - first);
        let g_test = kernel.scoring().g_test;
        let test_size = if g_test { size } else { 0 };
        let mut mi = vec![f32::NAN; size];
        let mut statistic = vec![f64::NAN; test_size];
        let mut dof = vec![-7; test_size];
        let mut pvalues = vec![f32::NAN; test_size];
        let out = ScoresMut {
            mi: &mut mi,
            statistic: g_test.then_some(&mut statistic[..]),
            dof: g_test.then_some(&mut dof[..]),
            pvalues: g_test.then_some(&mut pvalues[..]),
        };
        kernel.scores(rows, first, out).unwrap();
        for ((&p, &x), &k) in pvalues.iter().zip(&statistic).zip(&dof) {
            assert_eq!(p.to_bits(), (chi2_sf(x, k.unsigned_abs()) as f32).to_bits());
        }
        if g_test {
            let (mut mi_alone, mut alone) = (vec![f32::NAN; size], vec![f32::NAN; size]);
            let out = ScoresMut {
                mi: &mut mi_alone,
                statistic: None,
                dof: None,
                pvalues: Some(&mut alone),
            };
            kernel.scores(rows, first, out).unwrap();
            assert_eq!(alone, pvalues);
            assert_eq!(mi_alone, mi);
        }
        (mi, statistic, dof)
    }

    fn bits(kernel: &ScoreKernel, rows: GeneBlock, first: usize) -> Outputs {
        let (mi, statistic, dof) = run(kernel, rows, first);
        Outputs {
            mi: mi.iter().map(|v| v.to_bits()).collect(),
            statistic: statistic.iter().map(|v| v.to_bits()).collect(),
            dof,
        }
    }

    fn kernel(owned: &OwnedBinned, scoring: Scoring, block_genes: usize) -> ScoreKernel {
        ScoreKernel::new(&owned.view(), scoring, block_genes)
    }

    #[test]
    fn row_blocks_and_rectangles_equal_the_definition() {
        for (density, seed) in [(0.15, 3), (0.5, 5), (1.0, 9)] {
            let owned = example(60, 23, density, seed);
            assert_eq!(owned.view().check_shapes(), Ok(()));
            assert_eq!(owned.view().check_entries(), Ok(()));
            let n_genes = owned.n_bins.len();
            for (scoring, policy) in every_scoring()
                .into_iter()
                .flat_map(|s| POLICIES.map(|p| (s, p)))
            {
                let expected = reference(&owned, scoring);
                let kernel = ScoreKernel::with_policy(&owned.view(), scoring, 4, policy);
                let requests = [
                    (0, 23, 0),
                    (0, 5, 0),
                    (4, 17, 4),
                    (20, 23, 20),
                    (22, 23, 22),
                ];
                let rectangles = [(0, 5, 5), (3, 6, 11), (4, 17, 21), (0, 1, 22), (2, 9, 23)];
                for (lo, hi, first) in requests.into_iter().chain(rectangles) {
                    let rows = GeneBlock { lo, hi };
                    let (mi, statistic, dof) = run(&kernel, rows, first);
                    let pairs = (lo..hi).flat_map(|i| (first..n_genes).map(move |j| (i, j)));
                    for (at, (i, j)) in pairs.enumerate() {
                        let want = expected[i][j];
                        let got = f64::from(mi[at]);
                        let case = format!("{scoring:?} {policy:?} density {density} ({i}, {j})");
                        assert!((got - want.mi).abs() < 1e-6, "{case}: {got} != {}", want.mi);
                        assert_ne!(mi[at].to_bits(), (-0.0f32).to_bits(), "{case}");
                        if scoring.g_test {
                            let tolerance = 1e-9 * want.statistic.max(1.0);
                            let error = (statistic[at] - want.statistic).abs();
                            assert!(error <= tolerance, "{case}: {}", statistic[at]);
                            assert_eq!(dof[at], want.dof, "{case}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rectangles_are_slices_of_row_blocks() {
        let owned = example(70, 29, 0.3, 15);
        for scoring in [Scoring::default_score(2f64.powi(-32)), recommended()] {
            let kernel = kernel(&owned, scoring, 5);
            for (lo, hi) in [(0, 7), (3, 12), (10, 11)] {
                let block = bits(&kernel, GeneBlock { lo, hi }, lo);
                let n_cols = 29 - lo;
                for first in [hi, hi + 1, 17, 28, 29] {
                    let rectangle = bits(&kernel, GeneBlock { lo, hi }, first);
                    let slice = |v: &[u32]| -> Vec<u32> {
                        v.chunks(n_cols)
                            .flat_map(|row| row[first - lo..].to_vec())
                            .collect()
                    };
                    assert_eq!(rectangle.mi, slice(&block.mi), "({lo}, {hi}) from {first}");
                    if scoring.g_test {
                        let slice_64: Vec<u64> = block
                            .statistic
                            .chunks(n_cols)
                            .flat_map(|row| row[first - lo..].to_vec())
                            .collect();
                        let slice_dof: Vec<i32> = block
                            .dof
                            .chunks(n_cols)
                            .flat_map(|row| row[first - lo..].to_vec())
                            .collect();
                        assert_eq!(rectangle.statistic, slice_64);
                        assert_eq!(rectangle.dof, slice_dof);
                    }
                }
            }
        }
    }

    #[test]
    fn row_blocks_are_symmetric_with_a_zero_diagonal() {
        let owned = example(50, 19, 0.4, 19);
        let kernel = kernel(&owned, recommended(), 4);
        let (mi, statistic, dof) = run(&kernel, GeneBlock { lo: 2, hi: 19 }, 2);
        let n = 17;
        for r in 0..n {
            assert_eq!(
                (mi[r * n + r], statistic[r * n + r], dof[r * n + r]),
                (0.0, 0.0, 0)
            );
            for c in 0..n {
                assert_eq!(mi[r * n + c].to_bits(), mi[c * n + r].to_bits());
                assert_eq!(
                    statistic[r * n + c].to_bits(),
                    statistic[c * n + r].to_bits()
                );
                assert_eq!(dof[r * n + c], dof[c * n + r]);
            }
        }
    }

    #[test]
    fn block_size_and_policy_do_not_change_a_bit() {
        for density in [0.3, 1.0] {
            let owned = example(80, 31, density, 13);
            let rows = GeneBlock { lo: 2, hi: 29 };
            for scoring in every_scoring() {
                let default = default_block_genes_of(&owned.view());
                let baseline = bits(&kernel(&owned, scoring, default), rows, 2);
                let rectangle = bits(
                    &kernel(&owned, scoring, default),
                    GeneBlock { lo: 2, hi: 9 },
                    12,
                );
                for block_genes in [1, 2, 5, 7, 31, 256] {
                    for policy in POLICIES {
                        let kernel =
                            ScoreKernel::with_policy(&owned.view(), scoring, block_genes, policy);
                        let case =
                            format!("{scoring:?}, {block_genes} genes per block, {policy:?}");
                        assert_eq!(bits(&kernel, rows, 2), baseline, "{case}");
                        assert_eq!(
                            bits(&kernel, GeneBlock { lo: 2, hi: 9 }, 12),
                            rectangle,
                            "{case}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dense_blocks_are_dense() {
        let owned = example(90, 21, 0.9, 41);
        for block_genes in [3, 4, 5, 9, 21] {
            let kernel = kernel(&owned, recommended(), block_genes);
            assert!(kernel
                .blocks
                .blocks
                .iter()
                .all(|block| block.dense.is_some()));
        }
        let sparse = example(90, 21, 0.2, 41);
        let kernel = kernel(&sparse, recommended(), 4);
        assert!(kernel
            .blocks
            .blocks
            .iter()
            .all(|block| block.dense.is_none()));
    }

    #[test]
    fn genes_without_bins_at_the_end_of_a_block() {
        // Genes 1, 2 and 4 have no nonzero bin: their slots start at the end of the tile.
        let bins = vec![
            vec![1, 0, 0, 1, 0],
            vec![0, 0, 0, 1, 0],
            vec![1, 0, 0, 0, 0],
        ];
        let values = vec![vec![2.0, 0.0, 0.0, 1.0, 0.0]; 3];
        let owned = OwnedBinned::from_dense(&bins, &values, &[2, 1, 1, 2, 1]);
        for scoring in every_scoring() {
            let expected = reference(&owned, scoring);
            for (block_genes, policy) in [1, 2, 3, 5]
                .into_iter()
                .flat_map(|b| POLICIES.map(|p| (b, p)))
            {
                let kernel = ScoreKernel::with_policy(&owned.view(), scoring, block_genes, policy);
                let (mi, _, dof) = run(&kernel, GeneBlock { lo: 0, hi: 5 }, 0);
                for (at, &got) in mi.iter().enumerate() {
                    let (i, j) = (at / 5, at % 5);
                    let want = if i == j { 0.0 } else { expected[i][j].mi };
                    assert!(
                        (f64::from(got) - want).abs() < 1e-6,
                        "{scoring:?} ({i}, {j})"
                    );
                    if scoring.g_test {
                        assert_eq!(dof[at], expected[i][j].dof, "{scoring:?} ({i}, {j})");
                    }
                }
            }
        }
    }

    #[test]
    fn u32_tiles_equal_u16_tiles() {
        for density in [0.3, 1.0] {
            let owned = example(80, 31, density, 29);
            for scoring in every_scoring() {
                for policy in POLICIES {
                    let narrow = ScoreKernel::with_policy(&owned.view(), scoring, 7, policy);
                    let mut wide = ScoreKernel::with_policy(&owned.view(), scoring, 7, policy);
                    wide.narrow_limit = 0; // every tile with an entry in u32
                    let rows = GeneBlock { lo: 0, hi: 31 };
                    let case = format!("{scoring:?} {policy:?} density {density}");
                    assert_eq!(bits(&wide, rows, 0), bits(&narrow, rows, 0), "{case}");
                }
            }
        }
    }

    /// Genes 0, 1 and 3 with a bin of more than 65,535 cells, gene 2 sparse, gene 4 with
    /// two bins of about half the cells; small integer values (exact covariances).
    fn many_cells() -> OwnedBinned {
        let n_cells = 70_000;
        let mut next = xorshift(31);
        let mut bins = vec![vec![0u8; 5]; n_cells];
        let mut values = vec![vec![0.0; 5]; n_cells];
        for (cell_bins, cell_values) in bins.iter_mut().zip(&mut values) {
            let r: Vec<u64> = (0..5).map(|_| next() % 1000).collect();
            cell_bins[0] = if r[0] < 980 { 1 } else { 2 };
            cell_bins[1] = if r[1] < 970 { 2 } else { (r[1] % 3) as u8 };
            cell_bins[2] = if r[2] < 100 { 1 + (r[2] % 3) as u8 } else { 0 };
            cell_bins[3] = if r[3] < 990 { cell_bins[0] } else { 0 };
            cell_bins[4] = if r[4] < 995 { 1 + (r[4] % 2) as u8 } else { 0 };
            for (x, (&b, &r)) in cell_values.iter_mut().zip(cell_bins.iter().zip(&r)) {
                *x = if b > 0 {
                    f64::from(b) + (r % 2) as f64
                } else {
                    0.0
                };
            }
        }
        OwnedBinned::from_dense(&bins, &values, &[3, 3, 4, 3, 3])
    }

    #[test]
    fn bins_of_more_than_65535_cells_are_counted_in_u32() {
        let owned = many_cells();
        let largest: Vec<i64> = (0..5)
            .map(|g| *owned.view().nonzero_bin_counts(g).iter().max().unwrap())
            .collect();
        assert!(largest[0] > 65_535 && largest[1] > 65_535 && largest[3] > 65_535);
        assert!(largest[2] <= 65_535 && largest[4] <= 65_535);
        for scoring in [Scoring::default_score(2f64.powi(-32)), recommended()] {
            let expected = reference(&owned, scoring);
            let mut results = Vec::new();
            for (block_genes, policy) in [
                (1, DensePolicy::Auto),
                (2, DensePolicy::Never),
                (5, DensePolicy::Always),
            ] {
                let kernel = ScoreKernel::with_policy(&owned.view(), scoring, block_genes, policy);
                let tile = kernel.tile_state().tile;
                let blocks = &kernel.blocks.blocks;
                // Tiles of two blocks with such a bin are u32, the others u16.
                assert_eq!(tile.width(&blocks[0], &blocks[0]), Width::Wide);
                if block_genes == 1 {
                    assert_eq!(tile.width(&blocks[0], &blocks[1]), Width::Wide);
                    assert_eq!(tile.width(&blocks[0], &blocks[2]), Width::Narrow);
                    assert_eq!(tile.width(&blocks[1], &blocks[4]), Width::Narrow);
                }
                let (mi, statistic, dof) = run(&kernel, GeneBlock { lo: 0, hi: 5 }, 0);
                for (i, expected_i) in expected.iter().enumerate() {
                    for j in (0..5).filter(|&j| j != i) {
                        let (at, want) = (i * 5 + j, expected_i[j]);
                        let case = format!("{scoring:?} {block_genes} ({i}, {j})");
                        assert!(
                            (f64::from(mi[at]) - want.mi).abs() < 1e-6,
                            "{case}: {}",
                            mi[at]
                        );
                        if scoring.g_test {
                            let error = (statistic[at] - want.statistic).abs();
                            assert!(error <= 1e-9 * want.statistic.max(1.0), "{case}");
                            assert_eq!(dof[at], want.dof, "{case}");
                        }
                    }
                }
                results.push(bits(&kernel, GeneBlock { lo: 0, hi: 5 }, 0));
            }
            assert!(results.windows(2).all(|w| w[0] == w[1]), "{scoring:?}");
        }
    }

    #[test]
    fn thread_count_does_not_change_a_bit() {
        for (density, policy) in [(0.25, DensePolicy::Auto), (1.0, DensePolicy::Always)] {
            let owned = example(70, 40, density, 17);
            let rows = GeneBlock { lo: 0, hi: 40 };
            for scoring in [Scoring::default_score(2f64.powi(-32)), recommended()] {
                let in_pool = |threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    pool.install(|| {
                        let kernel = ScoreKernel::with_policy(&owned.view(), scoring, 3, policy);
                        (
                            bits(&kernel, rows, 0),
                            bits(&kernel, GeneBlock { lo: 0, hi: 11 }, 20),
                        )
                    })
                };
                assert_eq!(in_pool(1), in_pool(4), "density {density}");
            }
        }
    }

    #[test]
    fn one_cell_and_empty_inputs() {
        let owned = OwnedBinned::from_dense(&[vec![1, 0, 2]], &[vec![1.0, 0.0, 2.0]], &[2, 1, 3]);
        for scoring in every_scoring() {
            let (mi, statistic, dof) =
                run(&kernel(&owned, scoring, 2), GeneBlock { lo: 0, hi: 3 }, 0);
            assert!(mi.iter().all(|&v| v.to_bits() == 0), "{mi:?}");
            assert!(statistic.iter().all(|&v| v == 0.0) && dof.iter().all(|&d| d == 0));
        }
        let none = OwnedBinned::from_dense(&[], &[], &[1, 1]);
        let kernel_none = kernel(&none, recommended(), 8);
        let (mi, statistic, _) = run(&kernel_none, GeneBlock { lo: 0, hi: 2 }, 0);
        assert_eq!(mi, vec![0.0; 4]);
        assert_eq!(statistic, vec![0.0; 4]);
        assert!(run(&kernel_none, GeneBlock { lo: 1, hi: 1 }, 1)
            .0
            .is_empty());
        assert!(run(&kernel_none, GeneBlock { lo: 0, hi: 1 }, 2)
            .0
            .is_empty());
        let no_genes = OwnedBinned::from_dense(&[vec![]], &[vec![]], &[]);
        assert!(run(
            &kernel(&no_genes, recommended(), 8),
            GeneBlock { lo: 0, hi: 0 },
            0
        )
        .0
        .is_empty());
    }

    #[test]
    fn bad_requests_are_errors() {
        let owned = example(20, 9, 0.5, 23);
        let kernel = kernel(&owned, recommended(), 4);
        let mut mi = vec![0.0; 100];
        let mut statistic = vec![0.0; 100];
        let mut dof = vec![0; 100];
        let mut request = |lo: usize, hi: usize, first: usize, size: usize, test: bool| {
            let out = ScoresMut {
                mi: &mut mi[..size],
                statistic: test.then_some(&mut statistic[..size]),
                dof: test.then_some(&mut dof[..size]),
                pvalues: None,
            };
            kernel.scores(GeneBlock { lo, hi }, first, out)
        };
        assert!(request(0, 10, 0, 90, true)
            .unwrap_err()
            .contains("not within"));
        assert!(request(3, 6, 5, 12, true)
            .unwrap_err()
            .contains("columns from 5"));
        assert!(request(3, 6, 10, 0, true)
            .unwrap_err()
            .contains("columns from 10"));
        assert!(request(3, 6, 6, 10, true)
            .unwrap_err()
            .contains("wrong size"));
        assert!(request(3, 6, 6, 9, false).unwrap_err().contains("test"));
        assert_eq!(request(3, 6, 6, 9, true), Ok(()));
        let mut pvalues = vec![0.0; 9];
        let statistic_alone = ScoresMut {
            mi: &mut mi[..9],
            statistic: Some(&mut statistic[..9]),
            dof: None,
            pvalues: Some(&mut pvalues),
        };
        let error = kernel.scores(GeneBlock { lo: 3, hi: 6 }, 6, statistic_alone);
        assert!(error.unwrap_err().contains("come together"));
        let plain = self::kernel(&owned, Scoring::default_score(2f64.powi(-32)), 4);
        let untested_pvalues = ScoresMut {
            mi: &mut mi[..9],
            statistic: None,
            dof: None,
            pvalues: Some(&mut pvalues),
        };
        let error = plain.scores(GeneBlock { lo: 3, hi: 6 }, 6, untested_pvalues);
        assert!(error.unwrap_err().contains("only a test"));
    }

    #[test]
    fn default_blocks_fit_the_budgets() {
        for mean_bins in [0.0, 1.0, 2.5, 9.0, 19.0, 64.0, 255.0] {
            for density in [0.0, 0.01, 0.1, 0.5, 1.0] {
                let block_genes = default_block_genes(mean_bins, density);
                let bytes = (block_genes as f64 * mean_bins).powi(2) * 2.0;
                assert!((8..=MAX_BLOCK_GENES).contains(&block_genes));
                assert!(
                    bytes <= SPARSE_TILE_BYTES as f64 || block_genes == 8,
                    "{mean_bins}: {block_genes}"
                );
            }
        }
        // Dense data: the tile fits the cache budget; sparse data: larger blocks.
        assert_eq!(default_block_genes(10.0, 1.0), 28);
        assert_eq!(default_block_genes(10.0, 0.1), 72);
        assert!(default_block_genes(4.0, 0.05) >= 150);
    }
}
