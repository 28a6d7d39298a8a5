//! Sums of value products of two dense blocks, as a small matrix product (for the
//! Pearson signs of dense data).
//!
//! Pair by pair, the co-occurrence scan adds `x_ic * x_jc` to a sum in memory for every
//! cell expressing both genes; here a 4 × 4 group of sums stays in registers over a chunk
//! of cells, every cell included. Each sum is still added in increasing cell order from 0,
//! and a cell expressing only one gene adds a zero, which changes no sum (that starts at
//! `+0.0`), so it equals the pair-by-pair sum bit for bit.

use multiversion::multiversion;

use crate::dense::DenseBlock;

/// Cells per chunk: two blocks' values of a chunk stay in L2 cache.
const CELL_CHUNK: usize = 256;

/// A row-major matrix (cells × genes).
struct Matrix<'a> {
    data: &'a [f64],
    n_cols: usize,
}

impl Matrix<'_> {
    /// Its rows, one per cell.
    fn rows(&self) -> std::slice::ChunksExact<'_, f64> {
        self.data.chunks_exact(self.n_cols.max(1))
    }
}

/// `sums[r * width + c] += sum over cells of xs[cell][row + r] * ys[cell][col + c]` for a
/// 4 × 4 group, the 16 sums in registers.
#[inline(always)]
fn add_products_4x4(
    sums: &mut [f64],
    width: usize,
    xs: &Matrix<'_>,
    row: usize,
    ys: &Matrix<'_>,
    col: usize,
) {
    let mut acc = [[0.0f64; 4]; 4];
    for (r, acc_row) in acc.iter_mut().enumerate() {
        acc_row.copy_from_slice(&sums[r * width..r * width + 4]);
    }
    for (x, y) in xs.rows().zip(ys.rows()) {
        let x: &[f64; 4] = x[row..row + 4].try_into().expect("4 values");
        let y: &[f64; 4] = y[col..col + 4].try_into().expect("4 values");
        for (acc_row, &x) in acc.iter_mut().zip(x) {
            for (sum, &y) in acc_row.iter_mut().zip(y) {
                *sum += x * y;
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        sums[r * width..r * width + 4].copy_from_slice(acc_row);
    }
}

/// As [`add_products_4x4`] for a group of `shape` (at most 4 × 4) at the edge of a tile.
#[inline(always)]
fn add_products_small(
    sums: &mut [f64],
    width: usize,
    (xs, row): (&Matrix<'_>, usize),
    (ys, col): (&Matrix<'_>, usize),
    (n_rows, n_cols): (usize, usize),
) {
    for (x, y) in xs.rows().zip(ys.rows()) {
        for (r, &x) in x[row..row + n_rows].iter().enumerate() {
            for (sum, &y) in sums[r * width..r * width + n_cols]
                .iter_mut()
                .zip(&y[col..col + n_cols])
            {
                *sum += x * y;
            }
        }
    }
}

/// Adds `sum over cells of x_ic * x_jc` to `sums[ci * width + cj]` for every gene `i` of
/// `rows` and `j` of `cols` (columns `ci`, `cj` in their blocks). On the diagonal
/// (`same_block`) only groups reaching a pair `j > i` are summed; the pairs `j <= i` of
/// those groups get sums too. Compiled for several instruction sets; the best this CPU
/// has is picked at run time (the sums are the same: no fused multiply-add).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2", "x86_64+avx2"))]
pub fn add_dense_products(
    sums: &mut [f64],
    width: usize,
    rows: &DenseBlock,
    cols: &DenseBlock,
    same_block: bool,
) {
    let (n_rows, n_cols) = (rows.n_genes(), cols.n_genes());
    let n_cells = rows.values.len() / n_rows.max(1);
    for first in (0..n_cells).step_by(CELL_CHUNK) {
        let last = (first + CELL_CHUNK).min(n_cells);
        let xs = Matrix {
            data: &rows.values[first * n_rows..last * n_rows],
            n_cols: n_rows,
        };
        let ys = Matrix {
            data: &cols.values[first * n_cols..last * n_cols],
            n_cols,
        };
        for r in (0..n_rows).step_by(4) {
            let first_col = if same_block { r } else { 0 };
            for c in (first_col..n_cols).step_by(4) {
                let group = &mut sums[r * width + c..];
                if r + 4 <= n_rows && c + 4 <= n_cols {
                    add_products_4x4(group, width, &xs, r, &ys, c);
                } else {
                    let shape = ((n_rows - r).min(4), (n_cols - c).min(4));
                    add_products_small(group, width, (&xs, r), (&ys, c), shape);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_4_and_edges_give_the_plain_sums() {
        // 7 cells × 6 genes: one full group of 4 and edges of 2 on each side.
        let values: Vec<f64> = (0..42).map(|k| f64::from(k % 11) * 0.5 + 1.0).collect();
        let xs = Matrix {
            data: &values,
            n_cols: 6,
        };
        let mut sums = vec![0.0; 36];
        for (r, c) in [(0, 0), (0, 4), (4, 0), (4, 4)] {
            let shape = ((6 - r).min(4), (6 - c).min(4));
            if shape == (4, 4) {
                add_products_4x4(&mut sums[r * 6 + c..], 6, &xs, r, &xs, c);
            } else {
                add_products_small(&mut sums[r * 6 + c..], 6, (&xs, r), (&xs, c), shape);
            }
        }
        for i in 0..6 {
            for j in 0..6 {
                let expected = (0..7).fold(0.0, |sum, cell| {
                    sum + values[cell * 6 + i] * values[cell * 6 + j]
                });
                assert_eq!(sums[i * 6 + j].to_bits(), expected.to_bits(), "({i}, {j})");
            }
        }
    }
}
