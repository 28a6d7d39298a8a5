//! Python bindings of the geneverse core (`geneverse._core`).
//!
//! Only argument conversion lives here: the input is borrowed from NumPy as it is (no
//! conversion), checked, and handed to the kernel ([`rows::ScoreKernel`]) with the GIL
//! released. The kernel's blocked copy of the entries is in [`blocks`], the counting in
//! [`cooccurrence`] (and [`dense`] and [`products`] for dense blocks), the fused finish
//! in [`finish`], the tiling of a request in [`rows`]. How the scores are computed, and
//! the order of operations every backend follows, is the docs page "How the scores are
//! computed".

pub mod bh;
pub mod binned;
pub mod blocks;
pub mod chi2;
pub mod cooccurrence;
pub mod count;
pub mod dense;
pub mod finish;
pub mod pool;
pub mod products;
pub mod rows;

use numpy::{
    PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::binned::Binned;
use crate::blocks::{GeneBlock, MAX_BLOCK_GENES};
use crate::finish::Scoring;
use crate::rows::{default_block_genes_of, ScoreKernel, ScoresMut};

/// The arrays of scores of a request: the MI, and with a test either the statistic and
/// dof or the p-values.
type ScoreArrays<'py> = (
    Bound<'py, PyArray2<f32>>,
    Option<Bound<'py, PyArray2<f64>>>,
    Option<Bound<'py, PyArray2<i32>>>,
    Option<Bound<'py, PyArray2<f32>>>,
);

/// The arrays of a `geneverse._data._binned.BinnedGenes`, read from its attributes.
#[derive(FromPyObject)]
struct BinnedArrays<'py> {
    n_cells: usize,
    indptr: PyReadonlyArray1<'py, i64>,
    genes: PyReadonlyArray1<'py, i32>,
    bins: PyReadonlyArray1<'py, u8>,
    values: PyReadonlyArray1<'py, f64>,
    n_bins: PyReadonlyArray1<'py, i32>,
    bin_counts: PyReadonlyArray2<'py, i64>,
    varies: PyReadonlyArray1<'py, bool>,
    value_sums: PyReadonlyArray1<'py, f64>,
    value_norms: PyReadonlyArray1<'py, f64>,
    expressed: PyReadonlyArray1<'py, i64>,
    bins_xlogx: PyReadonlyArray1<'py, f64>,
    occupied: PyReadonlyArray1<'py, i64>,
    full_inverse: PyReadonlyArray1<'py, f64>,
    xlogx: PyReadonlyArray1<'py, f64>,
    log2: PyReadonlyArray1<'py, f64>,
}

/// `array`'s data, or an error naming it when it is not contiguous (or not aligned).
fn contiguous<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    name: &str,
    array: &'a numpy::PyReadonlyArray<'_, T, D>,
) -> PyResult<&'a [T]> {
    array.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "BinnedGenes.{name} must be C-contiguous and aligned"
        ))
    })
}

impl<'py> BinnedArrays<'py> {
    /// A view of the arrays, its sizes and gene tables checked (not yet its entries).
    fn view(&self) -> PyResult<Binned<'_>> {
        let binned = Binned {
            indptr: contiguous("indptr", &self.indptr)?,
            genes: contiguous("genes", &self.genes)?,
            bins: contiguous("bins", &self.bins)?,
            values: contiguous("values", &self.values)?,
            n_bins: contiguous("n_bins", &self.n_bins)?,
            bin_counts: contiguous("bin_counts", &self.bin_counts)?,
            max_bins: self.bin_counts.shape()[1],
            varies: contiguous("varies", &self.varies)?,
            value_sums: contiguous("value_sums", &self.value_sums)?,
            value_norms: contiguous("value_norms", &self.value_norms)?,
            expressed: contiguous("expressed", &self.expressed)?,
            bins_xlogx: contiguous("bins_xlogx", &self.bins_xlogx)?,
            occupied: contiguous("occupied", &self.occupied)?,
            full_inverse: contiguous("full_inverse", &self.full_inverse)?,
            xlogx: contiguous("xlogx", &self.xlogx)?,
            log2: contiguous("log2", &self.log2)?,
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

/// A gene index from Python, checked to be in `0..=n_genes`.
fn gene_index(name: &str, value: i64, n_genes: usize) -> PyResult<usize> {
    usize::try_from(value)
        .ok()
        .filter(|&g| g <= n_genes)
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} = {value} is not within 0..={n_genes}"))
        })
}

/// The co-occurrence kernel of one input and one scoring choice (the docs page "How the
/// scores are computed").
///
/// ``CooccurrenceKernel(data, *, signed, include_zeros, miller_madow, g_test,
/// sign_tolerance, n_jobs, block_genes=None)`` checks ``data`` (a ``BinnedGenes``, whose
/// arrays are borrowed as they are, never converted) and builds the kernel's own blocked
/// copy of the entries (about 10 bytes per entry when signed, 2 otherwise, plus the dense
/// form of blocks that most cells express); :meth:`scores` then counts and finishes
/// blocks of pairs. Everything runs on ``n_jobs`` threads (0: one per core) with the GIL
/// released. ``block_genes`` (genes per block, 1 to 256) is for tuning; the results do
/// not depend on it, nor on ``n_jobs``, bit for bit.
#[pyclass(frozen, module = "geneverse._core")]
struct CooccurrenceKernel {
    kernel: ScoreKernel,
    n_jobs: usize,
}

#[pymethods]
impl CooccurrenceKernel {
    #[new]
    #[pyo3(signature = (
        data, *, signed, include_zeros, miller_madow, g_test, sign_tolerance, n_jobs,
        block_genes=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data: BinnedArrays<'_>,
        signed: bool,
        include_zeros: bool,
        miller_madow: bool,
        g_test: bool,
        sign_tolerance: f64,
        n_jobs: usize,
        block_genes: Option<usize>,
    ) -> PyResult<Self> {
        if !(sign_tolerance.is_finite() && sign_tolerance >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "sign_tolerance must be finite and >= 0 (got {sign_tolerance})"
            )));
        }
        let scoring = Scoring {
            signed,
            include_zeros,
            miller_madow,
            g_test,
            sign_tolerance,
        };
        let binned = data.view()?;
        let block_genes = match block_genes {
            Some(n) if (1..=MAX_BLOCK_GENES).contains(&n) => n,
            Some(n) => {
                return Err(PyValueError::new_err(format!(
                    "block_genes must be in 1..={MAX_BLOCK_GENES} (got {n})"
                )))
            }
            None => default_block_genes_of(&binned),
        };
        let build = || -> Result<ScoreKernel, String> {
            binned
                .check_entries()
                .map_err(|e| format!("invalid BinnedGenes: {e}"))?;
            Ok(ScoreKernel::new(&binned, scoring, block_genes))
        };
        let kernel = py
            .detach(|| pool::install(n_jobs, build).and_then(|built| built))
            .map_err(PyValueError::new_err)?;
        Ok(CooccurrenceKernel { kernel, n_jobs })
    }

    /// The scores of genes ``start:stop`` against genes ``first_column:n_genes``.
    ///
    /// ``first_column=None`` (or ``start``) is a row block: columns ``start:``, the pairs
    /// within the rows both ways (left of the diagonal mirrored from above), the diagonal
    /// 0. Otherwise ``first_column >= stop``: a rectangle of disjoint genes. Returns
    /// ``(mi, statistic, dof, pvalues)``, new arrays of shape
    /// ``(stop - start, n_genes - first)`` or ``None``: the MI in bits (``float32``) under
    /// the scoring choice, and with ``g_test`` either the Williams-corrected G statistic
    /// (``float64``) and its degrees of freedom (``int32``) or, with ``pvalues``, the
    /// p-values ``chi2.sf(statistic, dof)`` (``float32``, 1 on a row block's diagonal),
    /// finished with each pair.
    #[pyo3(signature = (start, stop, first_column=None, pvalues=false))]
    fn scores<'py>(
        &self,
        py: Python<'py>,
        start: i64,
        stop: i64,
        first_column: Option<i64>,
        pvalues: bool,
    ) -> PyResult<ScoreArrays<'py>> {
        let n_genes = self.kernel.n_genes();
        let (lo, hi) = (
            gene_index("start", start, n_genes)?,
            gene_index("stop", stop, n_genes)?,
        );
        if lo > hi {
            return Err(PyValueError::new_err(format!(
                "rows {start}:{stop} end before they start (need start <= stop)"
            )));
        }
        let first = match first_column {
            None => lo,
            Some(first) => gene_index("first_column", first, n_genes)?,
        };
        if first != lo && first < hi {
            return Err(PyValueError::new_err(format!(
                "columns from {first} must start at the rows' first gene ({lo}) or after their \
                 last ({hi})"
            )));
        }
        let shape = [hi - lo, n_genes - first];
        let mi = PyArray2::<f32>::zeros(py, shape, false);
        let g_test = self.kernel.scoring().g_test;
        if pvalues && !g_test {
            return Err(PyValueError::new_err(
                "p-values need a kernel made with g_test=True",
            ));
        }
        let statistic = (g_test && !pvalues).then(|| PyArray2::<f64>::zeros(py, shape, false));
        let dof = (g_test && !pvalues).then(|| PyArray2::<i32>::zeros(py, shape, false));
        let pvalues = pvalues.then(|| PyArray2::<f32>::zeros(py, shape, false));
        {
            let mut mi_out = mi.readwrite();
            let mut statistic_out = statistic.as_ref().map(|a| a.readwrite());
            let mut dof_out = dof.as_ref().map(|a| a.readwrite());
            let mut pvalues_out = pvalues.as_ref().map(|a| a.readwrite());
            let out = ScoresMut {
                mi: mi_out.as_slice_mut().expect("a new array is contiguous"),
                statistic: statistic_out
                    .as_mut()
                    .map(|a| a.as_slice_mut().expect("a new array is contiguous")),
                dof: dof_out
                    .as_mut()
                    .map(|a| a.as_slice_mut().expect("a new array is contiguous")),
                pvalues: pvalues_out
                    .as_mut()
                    .map(|a| a.as_slice_mut().expect("a new array is contiguous")),
            };
            let rows = GeneBlock { lo, hi };
            let work = || self.kernel.scores(rows, first, out);
            py.detach(|| pool::install(self.n_jobs, work))
                .and_then(|done| done)
                .map_err(PyValueError::new_err)?;
        }
        Ok((mi, statistic, dof, pvalues))
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

/// The G-test's p-values, `chi2.sf(statistic, dof)` as `float32` in the shape of
/// `statistic`, 1 where `dof` is 0, computed in closed form on `n_jobs` threads (0: one
/// per core) with the GIL released. With `row_block`, the arrays are a kernel's row block
/// (rows `r0:r1` against the columns from `r0`): the pairs left of its diagonal are
/// copied from their mirrors instead of computed, and the diagonal is 1.
#[pyfunction]
#[pyo3(signature = (statistic, dof, n_jobs=0, row_block=false))]
fn chi2_pvalues<'py>(
    py: Python<'py>,
    statistic: PyReadonlyArrayDyn<'py, f64>,
    dof: PyReadonlyArrayDyn<'py, i32>,
    n_jobs: usize,
    row_block: bool,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let shape = statistic.shape().to_vec();
    if shape != dof.shape() {
        return Err(PyValueError::new_err(format!(
            "statistic and dof must have the same shape (got {shape:?} and {:?})",
            dof.shape()
        )));
    }
    if row_block && shape.len() != 2 {
        return Err(PyValueError::new_err(format!(
            "a row block is a 2-d array, not of shape {shape:?}"
        )));
    }
    let pvalues = PyArrayDyn::<f32>::zeros(py, shape.as_slice(), false);
    {
        let mut out = pvalues.readwrite();
        let out = out.as_slice_mut().expect("a new array is contiguous");
        let not_contiguous = |_| PyValueError::new_err("statistic and dof must be C-contiguous");
        let (statistic, dof) = (
            statistic.as_slice().map_err(not_contiguous)?,
            dof.as_slice().map_err(not_contiguous)?,
        );
        let work = || {
            if row_block {
                chi2::row_block_pvalues(statistic, dof, shape[1], out)
            } else {
                chi2::pvalues(statistic, dof, out)
            }
        };
        py.detach(|| pool::install(n_jobs, work))
            .and_then(|done| done)
            .map_err(PyValueError::new_err)?;
    }
    Ok(pvalues)
}

/// Benjamini–Hochberg q-values of the pairs `i < j` of a symmetric `(G, G)` matrix of
/// `float32` p-values, each pair one test (only the pairs `tested` marks, when given), as
/// a symmetric `float32` matrix with 1 on the diagonal and at the untested pairs; on
/// `n_jobs` threads (0: one per core) with the GIL released.
#[pyfunction]
#[pyo3(signature = (pvalues, tested=None, n_jobs=0))]
fn bh_qvalues_of_pairs<'py>(
    py: Python<'py>,
    pvalues: PyReadonlyArray2<'py, f32>,
    tested: Option<PyReadonlyArray2<'py, bool>>,
    n_jobs: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let n = pvalues.shape()[0];
    if pvalues.shape() != [n, n] || tested.as_ref().is_some_and(|t| t.shape() != [n, n]) {
        return Err(PyValueError::new_err(format!(
            "pvalues (and tested) must be square matrices of one shape, not {:?}",
            pvalues.shape()
        )));
    }
    let not_contiguous = |_| PyValueError::new_err("pvalues and tested must be C-contiguous");
    let p = pvalues.as_slice().map_err(not_contiguous)?;
    let tested = tested
        .as_ref()
        .map(|t| t.as_slice())
        .transpose()
        .map_err(not_contiguous)?;
    let q = PyArray2::<f32>::zeros(py, [n, n], false);
    {
        let mut out = q.readwrite();
        let out = out.as_slice_mut().expect("a new array is contiguous");
        py.detach(|| pool::install(n_jobs, || bh::qvalues_of_pairs(p, tested, n, out)))
            .and_then(|done| done)
            .map_err(PyValueError::new_err)?;
    }
    Ok(q)
}

/// The compiled core of geneverse.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<CooccurrenceKernel>()?;
    m.add_function(wrap_pyfunction!(chi2_pvalues, m)?)?;
    m.add_function(wrap_pyfunction!(bh_qvalues_of_pairs, m)?)?;
    Ok(())
}
