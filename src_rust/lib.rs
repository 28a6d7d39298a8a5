//! Python bindings of the geneverse core (`geneverse._core`).
//!
//! Only argument conversion lives here: the input is borrowed from NumPy as it is (no
//! conversion), checked, and handed to the kernel ([`rows::MiKernel`]) with the GIL
//! released. The
//! kernel's blocked copy of the entries is in [`blocks`], the counting in
//! [`cooccurrence`] (and [`dense`] and [`products`] for dense blocks), the MI finish in
//! [`finish`], the tiling of a row block in [`rows`].

pub mod binned;
pub mod blocks;
pub mod cooccurrence;
pub mod dense;
pub mod finish;
pub mod pool;
pub mod products;
pub mod rows;

use numpy::{
    PyArray2, PyArray4, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray4,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::binned::Binned;
use crate::blocks::{GeneBlock, MAX_BLOCK_GENES};
use crate::rows::{default_block_genes, CountBlockMut, MiKernel};

/// The `counts` and `products` arrays of a `CountBlock`.
type CountArrays<'py> = (Bound<'py, PyArray4<i64>>, Bound<'py, PyArray2<f64>>);

/// The arrays of a `geneverse.kernels.BinnedGenes`, read from its attributes.
#[derive(FromPyObject)]
struct BinnedArrays<'py> {
    n_cells: usize,
    indptr: PyReadonlyArray1<'py, i64>,
    genes: PyReadonlyArray1<'py, i32>,
    bins: PyReadonlyArray1<'py, u8>,
    values: PyReadonlyArray1<'py, f64>,
    n_bins: PyReadonlyArray1<'py, i32>,
    bin_counts: PyReadonlyArray2<'py, i64>,
    value_sums: PyReadonlyArray1<'py, f64>,
    varies: PyReadonlyArray1<'py, bool>,
    xlogx: PyReadonlyArray1<'py, f64>,
}

/// `array`'s data, or an error naming it when it is not contiguous.
fn contiguous<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    name: &str,
    array: &'a numpy::PyReadonlyArray<'_, T, D>,
) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))
}

impl<'py> BinnedArrays<'py> {
    /// A view of the arrays, its sizes checked (not yet its entries).
    fn view(&self) -> PyResult<Binned<'_>> {
        let binned = Binned {
            indptr: contiguous("BinnedGenes.indptr", &self.indptr)?,
            genes: contiguous("BinnedGenes.genes", &self.genes)?,
            bins: contiguous("BinnedGenes.bins", &self.bins)?,
            values: contiguous("BinnedGenes.values", &self.values)?,
            n_bins: contiguous("BinnedGenes.n_bins", &self.n_bins)?,
            bin_counts: contiguous("BinnedGenes.bin_counts", &self.bin_counts)?,
            max_bins: self.bin_counts.shape()[1],
            value_sums: contiguous("BinnedGenes.value_sums", &self.value_sums)?,
            varies: contiguous("BinnedGenes.varies", &self.varies)?,
            xlogx: contiguous("BinnedGenes.xlogx", &self.xlogx)?,
        };
        if binned.n_cells() != self.n_cells {
            return Err(PyValueError::new_err(format!(
                "BinnedGenes.indptr has {} entries, not n_cells + 1 = {}",
                binned.indptr.len(),
                self.n_cells + 1
            )));
        }
        if self.bin_counts.shape()[0] != binned.n_genes() {
            return Err(PyValueError::new_err(
                "BinnedGenes.bin_counts must have one row per gene (the length of n_bins)",
            ));
        }
        binned.check_shapes().map_err(invalid)?;
        Ok(binned)
    }
}

fn invalid(message: String) -> PyErr {
    PyValueError::new_err(format!("invalid BinnedGenes: {message}"))
}

/// The co-occurrence MI kernel of one input (DESIGN.md §3).
///
/// ``CooccurrenceKernel(data, *, signed, n_jobs, block_genes=None)`` checks ``data`` (a
/// ``BinnedGenes``, whose arrays are borrowed as they are, never converted) and builds
/// the kernel's own blocked copy of the entries (about 11 bytes per entry when signed, 3
/// otherwise, plus the dense form of blocks that most cells express); :meth:`row_block` then computes rows of the (signed) MI matrix, and
/// :meth:`count_block` / :meth:`finish_block` the same in two steps (for chunks of
/// cells). Everything runs on ``n_jobs`` threads (0: one per core) with the GIL
/// released. ``block_genes`` (genes per block, 1 to 256) is for tuning; the results do
/// not depend on it, nor on ``n_jobs``, bit for bit.
#[pyclass(frozen, module = "geneverse._core")]
struct CooccurrenceKernel {
    kernel: MiKernel,
    n_jobs: usize,
}

#[pymethods]
impl CooccurrenceKernel {
    #[new]
    #[pyo3(signature = (data, *, signed, n_jobs, block_genes=None))]
    fn new(
        py: Python<'_>,
        data: BinnedArrays<'_>,
        signed: bool,
        n_jobs: usize,
        block_genes: Option<usize>,
    ) -> PyResult<Self> {
        let binned = data.view()?;
        let block_genes = match block_genes {
            Some(n) if (1..=MAX_BLOCK_GENES).contains(&n) => n,
            Some(n) => {
                return Err(PyValueError::new_err(format!(
                    "block_genes must be in 1..={MAX_BLOCK_GENES} (got {n})"
                )))
            }
            None => {
                let cells_by_genes = (binned.n_cells() * binned.n_genes()).max(1);
                let density = binned.genes.len() as f64 / cells_by_genes as f64;
                default_block_genes(binned.max_bins - 1, density)
            }
        };
        let build = || -> Result<MiKernel, String> {
            binned
                .check_entries()
                .map_err(|e| format!("invalid BinnedGenes: {e}"))?;
            Ok(MiKernel::new(&binned, signed, block_genes))
        };
        let kernel = py
            .detach(|| pool::install(n_jobs, build).and_then(|built| built))
            .map_err(PyValueError::new_err)?;
        Ok(CooccurrenceKernel { kernel, n_jobs })
    }

    /// (Signed) MI of genes ``start:stop`` against genes ``start:n_genes``.
    ///
    /// Returns a new ``float32`` array of shape ``(stop - start, n_genes - start)``: entry
    /// ``[r, c]`` is the MI in bits of genes ``start + r`` and ``start + c`` (times the
    /// sign of their Pearson correlation when ``signed``); the diagonal is 0.
    fn row_block<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        stop: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let rows = self.rows(start, stop)?;
        let out = PyArray2::<f32>::zeros(py, [rows.len(), self.kernel.n_genes() - start], false);
        {
            let mut writer = out.readwrite();
            let out = writer.as_slice_mut().expect("a new array is contiguous");
            py.detach(|| pool::install(self.n_jobs, || self.kernel.row_block(rows, out)))
                .and_then(|done| done)
                .map_err(PyValueError::new_err)?;
        }
        Ok(out)
    }

    /// The co-occurrence counts and value products of genes ``start:stop`` against genes
    /// ``start:n_genes`` (the fields of a ``CountBlock``).
    ///
    /// Returns ``(counts, products)``: ``counts[r, a - 1, c, b - 1]`` (``int64``, shape
    /// ``(rows, width, columns, width)``, ``width = max(max_bins - 1, 1)``) is the number
    /// of cells with gene ``start + r`` in bin ``a`` and gene ``start + c`` in bin ``b``;
    /// ``products[r, c]`` (``float64``) the sum over those cells of the values' product
    /// (0 when not ``signed``). The diagonal pairs hold each gene with itself.
    fn count_block<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        stop: usize,
    ) -> PyResult<CountArrays<'py>> {
        let rows = self.rows(start, stop)?;
        let (w, n_cols) = (self.kernel.count_width(), self.kernel.n_genes() - start);
        let counts = PyArray4::<i64>::zeros(py, [rows.len(), w, n_cols, w], false);
        let products = PyArray2::<f64>::zeros(py, [rows.len(), n_cols], false);
        {
            let (mut counts, mut products) = (counts.readwrite(), products.readwrite());
            let block = CountBlockMut {
                counts: counts.as_slice_mut().expect("a new array is contiguous"),
                products: products.as_slice_mut().expect("a new array is contiguous"),
            };
            py.detach(|| pool::install(self.n_jobs, || self.kernel.count_block(rows, block)))
                .and_then(|done| done)
                .map_err(PyValueError::new_err)?;
        }
        Ok((counts, products))
    }

    /// (Signed) MI from the counts and products of :meth:`count_block` for genes
    /// ``start:start + rows`` (possibly summed over chunks of cells), finished with this
    /// kernel's marginals; the same ``float32`` array as :meth:`row_block`.
    ///
    /// Raises ``ValueError`` when the shapes are wrong, or when counts exceed the bin
    /// counts of their genes.
    fn finish_block<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        counts: PyReadonlyArray4<'py, i64>,
        products: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let n_rows = counts.shape()[0];
        self.rows(start, start + n_rows)?;
        let counts = contiguous("counts", &counts)?;
        let products = contiguous("products", &products)?;
        let n_cols = self.kernel.n_genes() - start;
        let out = PyArray2::<f32>::zeros(py, [n_rows, n_cols], false);
        {
            let mut writer = out.readwrite();
            let out = writer.as_slice_mut().expect("a new array is contiguous");
            let finish = || self.kernel.finish_block(start, counts, products, out);
            py.detach(|| pool::install(self.n_jobs, finish))
                .and_then(|done| done)
                .map_err(PyValueError::new_err)?;
        }
        Ok(out)
    }

    /// Number of genes.
    #[getter]
    fn n_genes(&self) -> usize {
        self.kernel.n_genes()
    }

    /// Genes per block (a tile is a block of rows × a block of columns).
    #[getter]
    fn block_genes(&self) -> usize {
        self.kernel.block_genes()
    }

    /// Bytes held by the kernel (its blocked copy of the entries and the gene tables).
    #[getter]
    fn nbytes(&self) -> usize {
        self.kernel.nbytes()
    }
}

impl CooccurrenceKernel {
    /// The genes ``start:stop``, checked.
    fn rows(&self, start: usize, stop: usize) -> PyResult<GeneBlock> {
        let n_genes = self.kernel.n_genes();
        if start > stop || stop > n_genes {
            return Err(PyValueError::new_err(format!(
                "need 0 <= start <= stop <= n_genes = {n_genes} (got start={start}, stop={stop})"
            )));
        }
        Ok(GeneBlock {
            lo: start,
            hi: stop,
        })
    }
}

/// The compiled core of geneverse.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<CooccurrenceKernel>()?;
    Ok(())
}
