//! The kernel's own copy of the input: genes cut into blocks, each block's entries stored
//! cell by cell.
//!
//! Counting a tile (a block of row genes × a block of column genes) then reads two
//! sequential streams, instead of picking a few entries out of every cell's CSR row (which
//! made the scan wait on memory). Built once per kernel, in parallel over blocks; it takes
//! 11 bytes per entry (3 without values) and 2 bytes per cell and block.

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
#[derive(Debug)]
pub struct Block {
    /// The genes of the block.
    pub genes: GeneBlock,
    /// Number of entries of each cell in the block.
    pub per_cell: Vec<u16>,
    /// `col * stride + bin - 1` of each entry, with `col` the gene's column in the block
    /// and `stride` the largest number of nonzero bins: its row (or column) in a tile's
    /// counts.
    pub slots: Vec<u16>,
    /// The gene's column in the block, of each entry.
    pub cols: Vec<u8>,
    /// The value of each entry; empty when built without values.
    pub values: Vec<f64>,
    /// The dense form of a block that most cells express (at least [`DENSE_FILL`] of its
    /// entries): its values as a matrix, and bitsets when they pay.
    pub dense: Option<DenseBlock>,
}

impl Block {
    /// The entries of `binned` whose gene is in `genes` (at most [`MAX_BLOCK_GENES`]), and
    /// their dense form when the block is dense (bitsets as `policy` says).
    pub fn build(
        binned: &Binned<'_>,
        genes: GeneBlock,
        stride: usize,
        with_values: bool,
        policy: DensePolicy,
    ) -> Self {
        assert!(genes.len() <= MAX_BLOCK_GENES && genes.len() * stride.max(1) <= 1 << 16);
        let mut block = Block {
            genes,
            per_cell: Vec::with_capacity(binned.n_cells()),
            slots: Vec::new(),
            cols: Vec::new(),
            values: Vec::new(),
            dense: None,
        };
        for cell in 0..binned.n_cells() {
            let entries = binned.cell_entries(cell);
            let cell_genes = &binned.genes[entries.clone()];
            let first = entries.start + cell_genes.partition_point(|&g| (g as usize) < genes.lo);
            let end = entries.start + cell_genes.partition_point(|&g| (g as usize) < genes.hi);
            block.per_cell.push((end - first) as u16);
            for e in first..end {
                let col = binned.genes[e] as usize - genes.lo;
                block
                    .slots
                    .push((col * stride + binned.bins[e] as usize - 1) as u16);
                block.cols.push(col as u8);
            }
            if with_values {
                block.values.extend_from_slice(&binned.values[first..end]);
            }
        }
        let cells_by_genes = (binned.n_cells() * genes.len()).max(1);
        let density = block.slots.len() as f64 / cells_by_genes as f64;
        if density >= DENSE_FILL || policy == DensePolicy::Always {
            let n_bins = (genes.lo..genes.hi)
                .map(|g| binned.n_bins[g] as usize - 1)
                .collect();
            let with_bitsets = bitsets_pay(density, stride, policy);
            let shape = (binned.n_cells(), n_bins, stride);
            let entries = block.entries(stride);
            block.dense = Some(DenseBlock::build(entries, shape, with_bitsets, with_values));
        }
        block
    }

    /// Every entry, cell by cell (value 0 when built without values).
    fn entries(&self, stride: usize) -> impl Iterator<Item = Entry> + '_ {
        let cells = self
            .per_cell
            .iter()
            .enumerate()
            .flat_map(|(cell, &n)| std::iter::repeat_n(cell, usize::from(n)));
        cells.enumerate().map(move |(p, cell)| {
            let col = usize::from(self.cols[p]);
            Entry {
                cell,
                col,
                bin: usize::from(self.slots[p]) - col * stride + 1,
                value: self.values.get(p).copied().unwrap_or(0.0),
            }
        })
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        let dense = self.dense.as_ref().map_or(0, DenseBlock::nbytes);
        2 * self.per_cell.len()
            + 2 * self.slots.len()
            + self.cols.len()
            + 8 * self.values.len()
            + dense
    }
}

/// Every gene of the input, in blocks of `block_genes` genes.
#[derive(Debug)]
pub struct BlockedGenes {
    /// Genes per block (the last block may have fewer).
    pub block_genes: usize,
    /// Largest number of nonzero bins of a gene (`max_bins - 1`).
    pub stride: usize,
    /// Whether the blocks hold the values (needed for the signs).
    pub with_values: bool,
    pub blocks: Vec<Block>,
}

impl BlockedGenes {
    /// Cuts the genes of `binned` (checked) into blocks, dense ones with bitsets as
    /// `policy` says; runs on the current rayon pool.
    pub fn build(
        binned: &Binned<'_>,
        block_genes: usize,
        with_values: bool,
        policy: DensePolicy,
    ) -> Self {
        let block_genes = block_genes.clamp(1, MAX_BLOCK_GENES);
        let stride = binned.max_bins.saturating_sub(1);
        let n_genes = binned.n_genes();
        let blocks = (0..n_genes.div_ceil(block_genes))
            .into_par_iter()
            .map(|b| {
                let genes = GeneBlock {
                    lo: b * block_genes,
                    hi: ((b + 1) * block_genes).min(n_genes),
                };
                Block::build(binned, genes, stride, with_values, policy)
            })
            .collect();
        BlockedGenes {
            block_genes,
            stride,
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
        assert_eq!(blocked.stride, 3);
        assert_eq!(blocked.blocks.len(), 3);
        let first = &blocked.blocks[0];
        assert_eq!(first.per_cell, vec![1, 0, 2]);
        // cell 0: gene 0 bin 1; cell 2: gene 0 bin 2, gene 1 bin 1.
        assert_eq!(first.slots, vec![0, 1, 3]);
        assert_eq!(first.cols, vec![0, 0, 1]);
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
