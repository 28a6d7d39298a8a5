//! The kernel's own copy of the input: genes cut into blocks, each block's entries stored
//! cell by cell.
//!
//! Counting a tile (a block of row genes × a block of column genes) then reads two
//! sequential streams, instead of picking a few entries out of every cell's CSR row (which
//! made the scan wait on memory). Built once per kernel in two parallel passes over the
//! entries (their arrays allocated once, at their final size); it takes 10 bytes per entry
//! (2 without values) and 2 bytes per cell and block.

use std::ops::Range;

use rayon::prelude::*;

use crate::binned::Binned;
use crate::dense::{bitsets_pay, DenseBlock, DensePolicy, Entry, DENSE_FILL};

/// Most genes in a block: a gene's column in its block is stored as `u8`.
pub const MAX_BLOCK_GENES: usize = 256;

/// A contiguous block of genes `lo..hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneBlock {
    pub lo: usize,
    pub hi: usize,
}

impl GeneBlock {
    /// Number of genes in the block.
    pub fn len(&self) -> usize {
        self.hi.saturating_sub(self.lo)
    }

    /// Whether the block has no gene.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The genes of both `self` and `other`.
    pub fn intersect(&self, other: GeneBlock) -> GeneBlock {
        GeneBlock {
            lo: self.lo.max(other.lo),
            hi: self.hi.min(other.hi),
        }
    }
}

/// The entries of one block of genes, cell after cell (in increasing cell order, each
/// cell's genes increasing).
///
/// Each gene of the block has one *slot* per nonzero bin, the genes' slots one after
/// another (`offsets`): a tile's counts are a `slots(rows) × slots(cols)` matrix with no
/// unused row or column, whatever the genes' numbers of bins.
#[derive(Debug)]
pub struct Block {
    /// The genes of the block.
    pub genes: GeneBlock,
    /// `offsets[col]..offsets[col + 1]`: the slots of the gene in column `col` of the
    /// block, one per nonzero bin (`genes.len() + 1` offsets).
    pub offsets: Vec<u16>,
    /// The column of each slot.
    pub slot_cols: Vec<u8>,
    /// The largest number of cells in one bin of a gene of the block: no count of a tile
    /// of this block exceeds it.
    pub max_bin_count: u64,
    /// Number of entries of each cell in the block.
    pub per_cell: Vec<u16>,
    /// `offsets[col] + bin - 1` of each entry, with `col` the gene's column in the block:
    /// its row (or column) in a tile's counts.
    pub slots: Vec<u16>,
    /// The value of each entry; empty when built without values.
    pub values: Vec<f64>,
    /// The dense form of a block that most cells express (at least [`DENSE_FILL`] of its
    /// entries): its values as a matrix, and bitsets when they pay.
    pub dense: Option<DenseBlock>,
}

impl Block {
    /// Number of slots (the nonzero bins of its genes).
    pub fn n_slots(&self) -> usize {
        usize::from(*self.offsets.last().unwrap_or(&0))
    }

    /// The column (in the block) of slot `slot`.
    pub fn col_of(&self, slot: u16) -> usize {
        usize::from(self.slot_cols[usize::from(slot)])
    }

    /// Every entry, cell by cell (value 0 when built without values).
    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let cells = self
            .per_cell
            .iter()
            .enumerate()
            .flat_map(|(cell, &n)| std::iter::repeat_n(cell, usize::from(n)));
        cells.enumerate().map(move |(p, cell)| {
            let slot = self.slots[p];
            let col = self.col_of(slot);
            Entry {
                cell,
                col,
                bin: usize::from(slot - self.offsets[col]) + 1,
                value: self.values.get(p).copied().unwrap_or(0.0),
            }
        })
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        let dense = self.dense.as_ref().map_or(0, DenseBlock::nbytes);
        2 * self.per_cell.len()
            + 2 * self.slots.len()
            + 8 * self.values.len()
            + 3 * self.slot_cols.len()
            + dense
    }
}

/// Every gene of the input, in blocks of `block_genes` genes.
#[derive(Debug)]
pub struct BlockedGenes {
    /// Genes per block (the last block may have fewer).
    pub block_genes: usize,
    /// Largest number of slots of a block.
    pub max_slots: usize,
    /// Whether the blocks hold the values (needed for the signs).
    pub with_values: bool,
    pub blocks: Vec<Block>,
}

/// The slots of a block's genes: `offsets`, `slot_cols` and `max_bin_count` of [`Block`].
fn layout(binned: &Binned<'_>, genes: GeneBlock) -> (Vec<u16>, Vec<u8>, u64) {
    let mut offsets = Vec::with_capacity(genes.len() + 1);
    let mut slot_cols = Vec::new();
    let mut max_bin_count = 0;
    offsets.push(0u16);
    for (col, gene) in (genes.lo..genes.hi).enumerate() {
        let counts = binned.nonzero_bin_counts(gene);
        slot_cols.extend(std::iter::repeat_n(col as u8, counts.len()));
        offsets.push(slot_cols.len() as u16);
        let largest = counts.iter().map(|&n| n.max(0) as u64).max();
        max_bin_count = max_bin_count.max(largest.unwrap_or(0));
    }
    (offsets, slot_cols, max_bin_count)
}

/// Cells cut into about `n_chunks` runs of consecutive cells of about equal entries.
fn cell_chunks(binned: &Binned<'_>, n_chunks: usize) -> Vec<Range<usize>> {
    let n_cells = binned.n_cells();
    let n_entries = binned.genes.len();
    let mut chunks = Vec::with_capacity(n_chunks);
    let mut start = 0;
    for k in 1..=n_chunks {
        let end = if k == n_chunks {
            n_cells
        } else {
            let target = (n_entries * k / n_chunks) as i64;
            let end = binned.indptr[..n_cells].partition_point(|&at| at < target);
            end.clamp(start, n_cells)
        };
        if end > start {
            chunks.push(start..end);
            start = end;
        }
    }
    chunks
}

/// Cuts `whole` into consecutive pieces of the given lengths.
fn cut<T>(whole: &mut [T], lengths: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut rest = whole;
    lengths
        .map(|len| {
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            piece
        })
        .collect()
}

/// The runs of a cell's entries by block: `(block, entries)`, in increasing block order.
fn runs<'a>(
    genes: &'a [i32],
    entries: Range<usize>,
    block_genes: usize,
) -> impl Iterator<Item = (usize, Range<usize>)> + 'a {
    let end = entries.end;
    let mut e = entries.start;
    std::iter::from_fn(move || {
        if e >= end {
            return None;
        }
        let block = genes[e] as usize / block_genes;
        let limit = ((block + 1) * block_genes) as i64;
        let start = e;
        e += 1;
        while e < end && i64::from(genes[e]) < limit {
            e += 1;
        }
        Some((block, start..e))
    })
}

impl BlockedGenes {
    /// Cuts the genes of `binned` (checked) into blocks, dense ones with bitsets as
    /// `policy` says; runs on the current rayon pool.
    ///
    /// Two passes over the entries, each in parallel over runs of cells: the first counts
    /// each cell's entries in each block, the second copies them into their blocks, whose
    /// arrays are then allocated at their final size.
    pub fn build(
        binned: &Binned<'_>,
        block_genes: usize,
        with_values: bool,
        policy: DensePolicy,
    ) -> Self {
        let block_genes = block_genes.clamp(1, MAX_BLOCK_GENES);
        let (n_cells, n_genes) = (binned.n_cells(), binned.n_genes());
        let n_blocks = n_genes.div_ceil(block_genes);
        let ranges: Vec<GeneBlock> = (0..n_blocks)
            .map(|b| GeneBlock {
                lo: b * block_genes,
                hi: ((b + 1) * block_genes).min(n_genes),
            })
            .collect();
        let layouts: Vec<_> = ranges.iter().map(|&genes| layout(binned, genes)).collect();
        // The slot of bin 1 of each gene, in its block.
        let first_slot: Vec<u16> = layouts
            .iter()
            .flat_map(|(offsets, _, _)| offsets[..offsets.len() - 1].iter().copied())
            .collect();
        let chunks = cell_chunks(binned, 4 * rayon::current_num_threads());

        // Pass 1: entries of each cell in each block, and of each chunk in each block.
        let mut per_cell: Vec<Vec<u16>> = (0..n_blocks).map(|_| vec![0; n_cells]).collect();
        let mut pieces: Vec<Vec<&mut [u16]>> = chunks.iter().map(|_| Vec::new()).collect();
        for cells in per_cell.iter_mut() {
            let lengths = chunks.iter().map(|chunk| chunk.len());
            for (chunk_pieces, piece) in pieces.iter_mut().zip(cut(cells, lengths)) {
                chunk_pieces.push(piece);
            }
        }
        let totals: Vec<Vec<usize>> = pieces
            .into_par_iter()
            .zip(chunks.par_iter())
            .map(|(mut per_block, cells)| {
                let mut totals = vec![0usize; n_blocks];
                for (k, cell) in cells.clone().enumerate() {
                    for (block, run) in runs(binned.genes, binned.cell_entries(cell), block_genes) {
                        per_block[block][k] = run.len() as u16;
                        totals[block] += run.len();
                    }
                }
                totals
            })
            .collect();

        // Pass 2: each chunk's entries into its pieces of the blocks' arrays.
        let size = |b: usize| totals.iter().map(|t| t[b]).sum::<usize>();
        let mut slots: Vec<Vec<u16>> = (0..n_blocks).map(|b| vec![0; size(b)]).collect();
        let mut values: Vec<Vec<f64>> = (0..n_blocks)
            .map(|b| vec![0.0; if with_values { size(b) } else { 0 }])
            .collect();
        let mut slot_pieces: Vec<Vec<&mut [u16]>> = chunks.iter().map(|_| Vec::new()).collect();
        let mut value_pieces: Vec<Vec<&mut [f64]>> = chunks.iter().map(|_| Vec::new()).collect();
        for (b, (block_slots, block_values)) in slots.iter_mut().zip(&mut values).enumerate() {
            let lengths = totals.iter().map(|t| t[b]);
            for (chunk_pieces, piece) in slot_pieces.iter_mut().zip(cut(block_slots, lengths)) {
                chunk_pieces.push(piece);
            }
            let lengths = totals.iter().map(|t| if with_values { t[b] } else { 0 });
            for (chunk_pieces, piece) in value_pieces.iter_mut().zip(cut(block_values, lengths)) {
                chunk_pieces.push(piece);
            }
        }
        slot_pieces
            .into_par_iter()
            .zip(value_pieces)
            .zip(chunks.par_iter())
            .for_each(|((mut slots, mut values), cells)| {
                let mut filled = vec![0usize; n_blocks];
                for cell in cells.clone() {
                    for (block, run) in runs(binned.genes, binned.cell_entries(cell), block_genes) {
                        let at = filled[block];
                        let n = run.len();
                        let out = &mut slots[block][at..at + n];
                        let genes = &binned.genes[run.clone()];
                        let bins = &binned.bins[run.clone()];
                        for ((slot, &gene), &bin) in out.iter_mut().zip(genes).zip(bins) {
                            *slot = first_slot[gene as usize] + u16::from(bin) - 1;
                        }
                        if with_values {
                            values[block][at..at + n].copy_from_slice(&binned.values[run]);
                        }
                        filled[block] = at + n;
                    }
                }
            });

        let mut blocks: Vec<Block> = ranges
            .into_iter()
            .zip(layouts)
            .zip(per_cell.into_iter().zip(slots).zip(values))
            .map(
                |((genes, (offsets, slot_cols, max_bin_count)), ((per_cell, slots), values))| {
                    Block {
                        genes,
                        offsets,
                        slot_cols,
                        max_bin_count,
                        per_cell,
                        slots,
                        values,
                        dense: None,
                    }
                },
            )
            .collect();
        blocks.par_iter_mut().for_each(|block| {
            let cells_by_genes = (n_cells * block.genes.len()).max(1);
            let density = block.slots.len() as f64 / cells_by_genes as f64;
            if density >= DENSE_FILL || policy == DensePolicy::Always {
                let n_bins: Vec<usize> = block
                    .offsets
                    .windows(2)
                    .map(|w| usize::from(w[1] - w[0]))
                    .collect();
                let stride = n_bins.iter().copied().max().unwrap_or(0);
                let with_bitsets = bitsets_pay(density, stride, policy);
                let shape = (n_cells, block.offsets.clone());
                block.dense = Some(DenseBlock::build(
                    block.entries(),
                    shape,
                    with_bitsets,
                    with_values,
                ));
            }
        });
        let max_slots = blocks.iter().map(Block::n_slots).max().unwrap_or(0);
        BlockedGenes {
            block_genes,
            max_slots,
            with_values,
            blocks,
        }
    }

    /// The block holding gene `gene`.
    pub fn block_of(&self, gene: usize) -> usize {
        gene / self.block_genes
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        self.blocks.iter().map(Block::nbytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binned::testing::OwnedBinned;

    #[test]
    fn blocks_hold_every_entry_once() {
        let bins = vec![
            vec![1, 0, 2, 1, 0],
            vec![0, 0, 0, 0, 0],
            vec![2, 1, 1, 0, 3],
        ];
        let values = vec![
            vec![1.0, 0.0, 5.0, 2.0, 0.0],
            vec![0.0; 5],
            vec![4.0, 2.0, 3.0, 0.0, 7.0],
        ];
        let owned = OwnedBinned::from_dense(&bins, &values, &[3, 2, 3, 2, 4]);
        let blocked = BlockedGenes::build(&owned.view(), 2, true, DensePolicy::Auto);
        assert_eq!(blocked.max_slots, 3);
        assert_eq!(blocked.blocks.len(), 3);
        let first = &blocked.blocks[0];
        assert_eq!(first.per_cell, vec![1, 0, 2]);
        // Gene 0 has slots 0 and 1, gene 1 slot 2.
        assert_eq!(first.offsets, vec![0, 2, 3]);
        assert_eq!(first.slot_cols, vec![0, 0, 1]);
        assert_eq!(first.max_bin_count, 1);
        // cell 0: gene 0 bin 1; cell 2: gene 0 bin 2, gene 1 bin 1.
        assert_eq!(first.slots, vec![0, 1, 2]);
        assert_eq!(first.values, vec![1.0, 4.0, 2.0]);
        let last = &blocked.blocks[2];
        assert_eq!(last.genes, GeneBlock { lo: 4, hi: 5 });
        assert_eq!(last.per_cell, vec![0, 0, 1]);
        assert_eq!(last.slots, vec![2]);
        assert_eq!(blocked.block_of(3), 1);
    }

    #[test]
    fn without_values_blocks_hold_none() {
        let owned = OwnedBinned::from_dense(&[vec![1, 1]], &[vec![1.0, 2.0]], &[2, 2]);
        let blocked = BlockedGenes::build(&owned.view(), 8, false, DensePolicy::Auto);
        assert!(blocked.blocks[0].values.is_empty());
        assert_eq!(blocked.blocks[0].slots, vec![0, 1]);
    }
}
