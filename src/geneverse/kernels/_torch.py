"""The ``gpu`` backend: co-occurrence counts as one-hot matrix products (PyTorch).

With ``Y`` the one-hot of the nonzero bins (one row per ``(gene, bin)``, one column per
cell), the counts of two gene tiles ``I`` and ``J`` are the product ``Y_I @ Y_J.T`` (the
docs page "How the scores are computed"). On CUDA the one-hot tiles are ``int8`` and the
product is ``torch._int_mm`` (exact ``int32`` counts on the tensor cores); elsewhere
(``device="cpu"``, how CI runs it) it is a ``float32`` product, exact because a chunk
never holds more than ``2**24`` cells. Chunks of cells are added in integers. The signs
come from a ``float64`` product of the sign-value tiles.

Each tile's counts are finished at once on the device (:meth:`_Finish.scores`), vectorised
over the tile: every ``float64`` sum is a sequence of element-wise operations in the
order the docs page prescribes per pair (bins of ``j`` inside bins of ``i``, then the
column marginals, then the zero cells), ``log2`` comes from the table of
:class:`~geneverse._data._binned.BinnedGenes` and the per-gene constants are its own.
No reduction whose order depends on the shape of a tile or on the device touches a
floating-point number (integer sums are exact in any order), so the MI, the G statistic
and the degrees of freedom equal those of every other backend bit for bit. Only the value
products are summed in another order (by the matrix product): their last bits may
differ, which can change a sign only where a covariance is within rounding of its bound.
Only the finished scores travel back to the host.

Every gene has the same ``n_nz = max_bins - 1`` one-hot rows; the rows of bins a gene
does not have stay zero, and contribute nothing since ``xlogx[0] == 0``. Tiles are
padded with empty genes to the shapes ``torch._int_mm`` needs; the padding is cut off
before the finish.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import GPU
from ._base import SIGN_TOLERANCE, BinnedGenes, Kernel, PairScores, Scoring

if TYPE_CHECKING:
    import torch

#: Largest number of cells in one chunk of a ``float32`` product: every count of a chunk
#: is then an integer that ``float32`` holds exactly.
_FLOAT32_EXACT = 1 << 24
#: Entries scattered into a one-hot tile at a time (bounds the index temporaries).
_SCATTER_STEP = {"cuda": 1 << 24, "cpu": 1 << 20}
#: Gene tile and cell chunk on a CPU device: modest, the products stay in cache-sized pieces.
_CPU_TILE_GENES = 256
_CPU_CHUNK_CELLS = 4096
#: Largest gene tile on CUDA; products of ``tile * n_nz`` rows already run at full speed.
_CUDA_MAX_TILE_GENES = 4096
#: A diagonal tile larger than this is cut in halves (see ``TorchKernel._diagonal_tile``).
_MIN_DIAGONAL_SPLIT = 1024
#: Fraction of the free device memory the tiles may use.
_CUDA_MEMORY_SHARE = 0.6
#: Bytes of temporaries one slice of the finish may use.
_FINISH_BYTES = {"cuda": 1 << 31, "cpu": 1 << 26}
_GEMMS = ("int8", "half", "float32")
_LN2 = float(np.log(2.0))


@dataclass(frozen=True)
class _Plan:
    """How a row block is cut: genes per tile, cells per chunk, and the product used."""

    tile_genes: int
    chunk_cells: int
    gemm: str


_NO_CUDA = (
    'PyTorch sees no CUDA device here; use backend="rust" (or "numba"), or '
    'device="cpu" to run the torch kernel on the CPU.'
)


def _nvidia_driver_present() -> bool:
    """An NVIDIA driver is loaded (its /proc entry, or nvidia-smi on the PATH)."""
    return os.path.exists("/proc/driver/nvidia") or shutil.which("nvidia-smi") is not None


class TorchKernel(Kernel):
    """Co-occurrence counting as one-hot matrix products with PyTorch (``backend="gpu"``).

    Parameters
    ----------
    data, scoring, n_jobs, device
        As :class:`~geneverse.kernels._base.Kernel`. ``device=None`` means ``"cuda"`` (an
        error without a CUDA device); ``"cpu"`` runs the same algorithm on the CPU with
        ``n_jobs`` torch threads.
    tile_genes
        Genes per tile; by default from the free device memory on CUDA, 256 on a CPU.
    chunk_cells
        Cells per chunk of a product; by default all cells when they fit on CUDA, 4096 on
        a CPU. Chunks are added in integers, so any value gives the same counts.
    gemm
        ``"int8"`` (``torch._int_mm``, CUDA only; the default there), ``"half"`` (``float16``
        inputs, ``float32`` output, CUDA only) or ``"float32"`` (the default elsewhere).
    """

    name = GPU

    def __init__(
        self,
        data: BinnedGenes,
        scoring: Scoring,
        *,
        n_jobs: int,
        device: str | None = None,
        tile_genes: int | None = None,
        chunk_cells: int | None = None,
        gemm: str | None = None,
    ) -> None:
        import torch

        super().__init__(data, scoring, n_jobs=n_jobs, device=device)
        self._torch = torch
        self._dev = torch.device("cuda" if device is None else device)
        self._n_nz = max(data.max_bins - 1, 1)
        self._upload(data)  # first: the plan on CUDA fits the memory left free after it
        self._plan = self._make_plan(tile_genes, chunk_cells, gemm)
        self._finisher = _Finish.build(data, scoring, self._n_nz, torch, self._dev)

    # -- availability -------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls, device: str | None = None) -> str | None:
        """Why this backend cannot run on ``device`` here, or ``None`` when it can.

        ``device=None`` or a CUDA device needs PyTorch and a CUDA device; ``"cpu"`` only
        needs PyTorch. Without an NVIDIA driver, the answer comes without importing
        PyTorch (seconds), so that ``backend="auto"`` stays quick on machines with no GPU.
        """
        wants_cuda = device is None or str(device).startswith("cuda")
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed; install it with `pip install geneverse[gpu]`."
        if wants_cuda and not _nvidia_driver_present():
            return _NO_CUDA
        try:
            import torch
        except ImportError:
            return "PyTorch is not installed; install it with `pip install geneverse[gpu]`."
        try:
            kind = torch.device("cuda" if device is None else device).type
        except (RuntimeError, TypeError) as error:
            return f"{device!r} is not a device PyTorch knows ({error})."
        if kind == "cuda" and not torch.cuda.is_available():
            return _NO_CUDA
        return None

    @property
    def preferred_block_rows(self) -> int:
        """One gene tile of rows: each row block then costs one pass over the genes."""
        return self._plan.tile_genes

    @classmethod
    def cpu_available(cls) -> bool:
        """Whether the kernel can run with ``device="cpu"`` (PyTorch imports)."""
        return cls.unavailable_reason("cpu") is None

    # -- set-up -------------------------------------------------------------------------

    def _upload(self, data: BinnedGenes) -> None:
        """Move the entries to the device, gene-major (cells increasing within a gene)."""
        torch, dev = self._torch, self._dev
        genes = torch.as_tensor(np.asarray(data.genes, dtype=np.int32)).to(dev)
        per_cell = torch.as_tensor(np.diff(np.asarray(data.indptr, dtype=np.int64))).to(dev)
        cells = torch.repeat_interleave(
            torch.arange(data.n_cells, dtype=torch.int32, device=dev), per_cell
        )
        genes, order = torch.sort(genes, stable=True)
        self._genes = genes
        self._cells = cells[order]
        bins = torch.as_tensor(np.asarray(data.bins, dtype=np.uint8)).to(dev)
        self._slots = bins[order]
        self._values = None
        if self.scoring.signed:
            values = torch.as_tensor(np.asarray(data.values, dtype=np.float64)).to(dev)
            self._values = values[order]
        counts = np.bincount(np.asarray(data.genes), minlength=data.n_genes)
        self._gene_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _make_plan(
        self, tile_genes: int | None, chunk_cells: int | None, gemm: str | None
    ) -> _Plan:
        """Tile and chunk sizes: the arguments, else from the device and its free memory."""
        cuda = self._dev.type == "cuda"
        gemm = gemm or ("int8" if cuda else "float32")
        if gemm not in _GEMMS:
            raise ValueError(f"gemm must be one of {list(_GEMMS)}, not {gemm!r}.")
        if gemm != "float32" and not cuda:
            raise ValueError(f'gemm="{gemm}" needs a CUDA device; use gemm="float32".')
        for name, value in (("tile_genes", tile_genes), ("chunk_cells", chunk_cells)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive whole number, not {value!r}.")
        n_genes, n_cells = max(self.data.n_genes, 1), max(self.data.n_cells, 1)
        if cuda and (tile_genes is None or chunk_cells is None):
            auto_tile, auto_chunk = self._cuda_sizes(n_genes, n_cells, gemm)
        else:
            auto_tile, auto_chunk = _CPU_TILE_GENES, _CPU_CHUNK_CELLS
        tile = min(int(tile_genes or auto_tile), n_genes)
        chunk = min(int(chunk_cells or auto_chunk), n_cells)
        if gemm != "int8":
            chunk = min(chunk, _FLOAT32_EXACT)
        return _Plan(tile_genes=tile, chunk_cells=chunk, gemm=gemm)

    def _cuda_sizes(self, n_genes: int, n_cells: int, gemm: str) -> tuple[int, int]:
        """Largest gene tile, then largest cell chunk, whose buffers fit the free memory."""
        free, _ = self._torch.cuda.mem_get_info(self._dev)
        budget = _CUDA_MEMORY_SHARE * free - _FINISH_BYTES["cuda"]
        one_hot = 1 if gemm == "int8" else 2
        tile = min(_CUDA_MAX_TILE_GENES, n_genes)
        while True:
            chunk = n_cells
            while True:
                if self._tile_bytes(tile, chunk, one_hot, chunk < n_cells) <= budget:
                    return tile, chunk
                if chunk <= 32768:
                    break
                chunk = (chunk + 1) // 2
            if tile <= 64:
                return tile, chunk
            tile //= 2

    def _tile_bytes(self, tile: int, chunk: int, one_hot: int, chunked: bool) -> int:
        """Device bytes of the buffers of one tile pair (one-hot, counts, values, gram) and
        of the row block's scores."""
        width = _padded_genes(tile, self._n_nz) * self._n_nz
        chunk = _round_up(chunk, 8)
        total = 2 * width * chunk * one_hot + width * width * 4 * (2 if chunked else 1)
        if self.scoring.signed:
            total += 2 * tile * chunk * 8 + tile * tile * 8 * 2
        per_pair = 4 + (8 + 4 if self.scoring.g_test else 0)  # mi, statistic, dof
        total += _CUDA_MAX_TILE_GENES * self.data.n_genes * per_pair
        return total

    # -- the scores -----------------------------------------------------------------------

    def scores(self, start: int, stop: int, first_column: int | None = None) -> PairScores:
        """The scores of genes ``start:stop`` against ``first_column:`` (see
        :meth:`~geneverse.kernels._base.Kernel.scores`).

        Fused: each tile's counts are finished on the device where they are made, and
        only the finished scores come back to the host.
        """
        first = self._columns(start, stop, first_column)
        with self._torch_threads():
            return self._to_host(self._scores(start, stop, first))

    @contextmanager
    def _torch_threads(self) -> Iterator[None]:
        """No autograd; on a CPU device ``n_jobs`` torch threads, as before afterwards."""
        torch = self._torch
        threads = torch.get_num_threads()
        if self._dev.type == "cpu" and self.n_jobs and self.n_jobs > 0:
            torch.set_num_threads(int(self.n_jobs))
        try:
            with torch.no_grad():
                yield
        finally:
            torch.set_num_threads(threads)

    @property
    def _finish_budget(self) -> int:
        return _FINISH_BYTES.get(self._dev.type, _FINISH_BYTES["cpu"])

    def _scores(self, start: int, stop: int, first: int) -> tuple:
        """The scores on the device, from the tiles of :meth:`_tiles`; left of a row
        block's diagonal the block mirrors the rows above, its diagonal is 0."""
        torch, dev = self._torch, self._dev
        shape = (stop - start, self.data.n_genes - first)
        mi = torch.zeros(shape, dtype=torch.float32, device=dev)
        statistic = dof = None
        if self.scoring.g_test:
            statistic = torch.zeros(shape, dtype=torch.float64, device=dev)
            dof = torch.zeros(shape, dtype=torch.int32, device=dev)
        for i0, i1, j0, j1 in self._tiles(start, stop, first):
            rows, cols = slice(i0 - start, i1 - start), slice(j0 - first, j1 - first)
            tile = self._tile(i0, i1, j0, j1)
            mi[rows, cols] = tile[0]
            if statistic is not None:
                statistic[rows, cols] = tile[1]
                dof[rows, cols] = tile[2]
        if first == start:
            for values in (mi, statistic, dof):
                if values is not None:
                    _mirror_upper(values)
        return mi, statistic, dof

    def _tiles(self, start: int, stop: int, first: int) -> Iterator[tuple[int, int, int, int]]:
        """``(i0, i1, j0, j1)``: the tiles of genes ``I = start:stop`` against ``J = first:``
        that the scores are computed from.

        In a row block (``first == start``) a tile left of the diagonal (``j1 <= i0``) is
        left out, as that part mirrors the rows above, and a diagonal tile comes in the
        pieces of :meth:`_diagonal_pieces`. A rectangle is all of its tiles.
        """
        step, n_genes = self._plan.tile_genes, self.data.n_genes
        for i0 in range(start, stop, step):
            i1 = min(stop, i0 + step)
            for j0 in range(first, n_genes, step):
                j1 = min(n_genes, j0 + step)
                if first != start:
                    yield i0, i1, j0, j1
                elif j1 <= i0:
                    continue
                elif (j0, j1) == (i0, i1):
                    yield from self._diagonal_pieces(i0, i1)
                else:
                    yield i0, i1, j0, j1

    def _diagonal_pieces(self, g0: int, g1: int) -> Iterator[tuple[int, int, int, int]]:
        """The pieces of the diagonal tile ``g0:g1``: its two diagonal halves (split again
        while large) and the tile between them.

        The lower-left quarter mirrors the upper-right one, so a large diagonal tile costs
        about 5/8 of its products, not all of them.
        """
        size = g1 - g0
        if size <= max(_MIN_DIAGONAL_SPLIT, 1):
            yield g0, g1, g0, g1
            return
        mid = g0 + (_round_up(size // 2, 8) if size > 16 else size // 2)
        yield from self._diagonal_pieces(g0, mid)
        yield g0, mid, mid, g1
        yield from self._diagonal_pieces(mid, g1)

    def _to_host(self, scores: tuple) -> PairScores:
        """The scores as numpy arrays.

        From CUDA each copy goes into memory that is already paged in: copying into a
        fresh array pays a page fault per 4 KiB inside the transfer (measured on an H200:
        120 ms instead of 280 ms for a 4096 x 20000 block; pinned memory gave 160 ms).
        """
        host = []
        for values in scores:
            if values is None:
                host.append(None)
            elif self._dev.type != "cuda":
                host.append(values.cpu().numpy())
            else:
                dtype = {
                    self._torch.float32: np.float32,
                    self._torch.float64: np.float64,
                    self._torch.int32: np.int32,
                }[values.dtype]
                array = np.empty(tuple(values.shape), dtype=dtype)
                array.fill(0)
                self._torch.from_numpy(array).copy_(values)
                host.append(array)
        mi, statistic, dof = host
        return PairScores(mi=mi, statistic=statistic, dof=dof)

    def _tile(self, i0: int, i1: int, j0: int, j1: int) -> tuple:
        """The scores of genes ``i0:i1`` against ``j0:j1``, on the device, in slices of rows.

        The padding of the counts is cut off first, so the finish sees real genes only;
        an entry does not depend on the slice or tile it is finished in.
        """
        counts, gram = self._tile_counts(i0, i1, j0, j1)
        n_nz, n_rows, n_cols = self._n_nz, i1 - i0, j1 - j0
        width_i, width_j = counts.shape[0] // n_nz, counts.shape[1] // n_nz
        counts4 = counts.view(width_i, n_nz, width_j, n_nz)[:n_rows, :, :n_cols]
        if gram is not None:
            gram = gram[:n_rows, :n_cols]
        step = _finish_rows(n_cols, n_nz, self._finish_budget)
        if step >= n_rows:
            return self._finisher.scores(counts4, gram, i0, j0)
        parts = []
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            part_gram = None if gram is None else gram[r0:r1]
            parts.append(self._finisher.scores(counts4[r0:r1], part_gram, i0 + r0, j0))
        return tuple(
            None if parts[0][k] is None else self._torch.cat([p[k] for p in parts])
            for k in range(3)
        )

    def _tile_counts(
        self, i0: int, i1: int, j0: int, j1: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Integer counts ``(width_i * n_nz, width_j * n_nz)`` and the gram, over cell chunks."""
        torch, chunk = self._torch, self._plan.chunk_cells
        n_cells, same = self.data.n_cells, (i0, i1) == (j0, j1)
        signed = self.scoring.signed
        width_i, width_j = _padded_genes(i1 - i0, self._n_nz), _padded_genes(j1 - j0, self._n_nz)
        counts = gram = None
        for c0 in range(0, n_cells, chunk):
            c1 = min(n_cells, c0 + chunk)
            y_i = self._one_hot(i0, i1, width_i, c0, c1)
            y_j = y_i if same else self._one_hot(j0, j1, width_j, c0, c1)
            part = self._product(y_i, y_j)
            counts = part if counts is None else counts.add_(part)
            if signed:
                x_i = self._dense_values(i0, i1, width_i, c0, c1)
                x_j = x_i if same else self._dense_values(j0, j1, width_j, c0, c1)
                g = x_i @ x_j.T
                gram = g if gram is None else gram.add_(g)
        if counts is None:  # no cells at all
            shape = (width_i * self._n_nz, width_j * self._n_nz)
            counts = torch.zeros(shape, dtype=torch.int32, device=self._dev)
            if signed:
                gram = torch.zeros((width_i, width_j), dtype=torch.float64, device=self._dev)
        return counts, gram

    def _product(self, y_i: torch.Tensor, y_j: torch.Tensor) -> torch.Tensor:
        """``y_i @ y_j.T`` as exact ``int32`` counts."""
        torch, gemm = self._torch, self._plan.gemm
        if gemm == "int8":
            return torch._int_mm(y_i, y_j.T)
        if gemm == "half":
            return torch.mm(y_i, y_j.T, out_dtype=torch.float32).to(torch.int32)
        return torch.mm(y_i, y_j.T).to(torch.int32)

    def _entries(self, g0: int, g1: int, c0: int, c1: int) -> Iterator[tuple]:
        """The entries of genes ``g0:g1`` and cells ``c0:c1``, in bounded pieces.

        Yields ``(piece, keep, genes, cells)``: the slice of the gene-major arrays, the mask
        of its entries inside the cell chunk (``None``: all), and their gene and cell,
        relative to ``g0`` and ``c0``.
        """
        lo, hi = int(self._gene_ptr[g0]), int(self._gene_ptr[g1])
        step = _SCATTER_STEP.get(self._dev.type, _SCATTER_STEP["cpu"])
        whole = c0 == 0 and c1 == self.data.n_cells
        for s0 in range(lo, hi, step):
            piece = slice(s0, min(hi, s0 + step))
            cells, genes = self._cells[piece], self._genes[piece]
            keep = None if whole else (cells >= c0) & (cells < c1)
            if keep is not None:
                cells, genes = cells[keep], genes[keep]
            yield piece, keep, (genes - g0).long(), (cells - c0).long()

    def _one_hot(self, g0: int, g1: int, width: int, c0: int, c1: int) -> torch.Tensor:
        """One-hot ``(width * n_nz, cells)`` tile of genes ``g0:g1`` over cells ``c0:c1``."""
        torch, n_nz = self._torch, self._n_nz
        dtype = {"int8": torch.int8, "half": torch.float16, "float32": torch.float32}
        n_cols = _round_up(c1 - c0, 8)
        y = torch.zeros((width * n_nz, n_cols), dtype=dtype[self._plan.gemm], device=self._dev)
        flat = y.view(-1)
        for piece, keep, genes, cells in self._entries(g0, g1, c0, c1):
            slots = self._slots[piece] if keep is None else self._slots[piece][keep]
            rows = genes * n_nz + (slots.long() - 1)
            flat.index_fill_(0, rows * n_cols + cells, 1)
        return y

    def _dense_values(self, g0: int, g1: int, width: int, c0: int, c1: int) -> torch.Tensor:
        """Dense ``float64`` sign values ``(width, cells)`` of genes ``g0:g1``, cells ``c0:c1``."""
        n_cols = _round_up(c1 - c0, 8)
        x = self._torch.zeros((width, n_cols), dtype=self._torch.float64, device=self._dev)
        flat = x.view(-1)
        for piece, keep, genes, cells in self._entries(g0, g1, c0, c1):
            values = self._values[piece] if keep is None else self._values[piece][keep]
            flat[genes * n_cols + cells] = values
        return x


@dataclass(frozen=True)
class _Finish:
    """The finish of a tile's counts on the device: the per-gene constants of
    :class:`~geneverse._data._binned.BinnedGenes` and its tables, and the scoring."""

    scoring: Scoring
    bin_counts: Any  # (n_genes, n_nz) int64: n_g(a), a = 1..n_nz (0 past the gene's bins)
    expressed: Any  # (n_genes,) int64: z_g
    bins_xlogx: Any  # (n_genes,) float64
    occupied: Any  # (n_genes,) int64
    levels: Any  # (n_genes,) int64: occupied + (z_g < N), the rows of the full table
    full_inverse: Any  # (n_genes,) float64
    varies: Any  # (n_genes,) bool
    value_sums: Any  # (n_genes,) float64
    value_norms: Any  # (n_genes,) float64
    xlogx: Any  # (n_cells + 1,) float64: m * log2(m)
    log2: Any  # (n_cells + 1,) float64: log2(m), 0 at m = 0
    n_cells: int
    log2_cells: float  # log2[n_cells], from the table

    @classmethod
    def build(cls, data: BinnedGenes, scoring: Scoring, n_nz: int, torch, dev) -> _Finish:
        """The constants of ``data`` on the device ``dev``."""
        bin_counts = np.asarray(data.bin_counts, dtype=np.int64)
        bins = np.zeros((data.n_genes, n_nz), dtype=np.int64)
        bins[:, : bin_counts.shape[1] - 1] = bin_counts[:, 1:]
        expressed = np.asarray(data.expressed, dtype=np.int64)
        occupied = np.asarray(data.occupied, dtype=np.int64)

        def on_device(values: np.ndarray, dtype) -> Any:
            return torch.as_tensor(np.ascontiguousarray(values, dtype=dtype)).to(dev)

        return cls(
            scoring=scoring,
            bin_counts=on_device(bins, np.int64),
            expressed=on_device(expressed, np.int64),
            bins_xlogx=on_device(data.bins_xlogx, np.float64),
            occupied=on_device(occupied, np.int64),
            levels=on_device(occupied + (expressed < data.n_cells), np.int64),
            full_inverse=on_device(data.full_inverse, np.float64),
            varies=on_device(data.varies, np.bool_),
            value_sums=on_device(data.value_sums, np.float64),
            value_norms=on_device(data.value_norms, np.float64),
            xlogx=on_device(data.xlogx, np.float64),
            log2=on_device(data.log2, np.float64),
            n_cells=int(data.n_cells),
            log2_cells=float(data.log2[data.n_cells]),
        )

    def scores(self, counts4, gram, i0: int, j0: int) -> tuple:
        """The scores of genes ``i0:`` against ``j0:`` from their counts and value products.

        ``counts4`` is ``(rows, n_nz, columns, n_nz)``, any integer dtype, real genes only;
        ``gram`` the ``(rows, columns)`` sums of the sign-value products (``None`` when
        unsigned). Returns the MI (``float32``) and, with a test, the statistic
        (``float64``) and the degrees of freedom (``int32``), else ``None``: the order of
        operations of the docs page "How the scores are computed", each step one
        element-wise operation over the whole slice.
        """
        import torch

        scoring, xlogx, n_cells = self.scoring, self.xlogx, self.n_cells
        f64 = torch.float64
        n_rows, n_nz, n_cols = counts4.shape[0], counts4.shape[1], counts4.shape[2]
        rows, cols = slice(i0, i0 + n_rows), slice(j0, j0 + n_cols)
        by_col_bin = counts4.new_empty((n_nz, n_rows, n_nz, n_cols), dtype=torch.int64)
        by_col_bin.copy_(counts4.permute(3, 0, 1, 2))  # (b, i, a, j): n(a, b)
        in_row_bin = by_col_bin.sum(0)  # (i, a, j): r_a
        in_col_bin = by_col_bin.sum(2)  # (b, i, j): k_b
        both = in_row_bin.sum(1)  # (i, j): c
        only_row = self.bin_counts[rows, :, None] - in_row_bin  # (i, a, j): u
        only_col = self.bin_counts[cols].T[:, None, :] - in_col_bin  # (b, i, j): v

        within = _gather(xlogx, by_col_bin[0])  # (i, a, j): t, b increasing
        for b in range(1, n_nz):
            within += _gather(xlogx, by_col_bin[b])
        s = within[:, 0] + _gather(xlogx, only_row[:, 0])  # S = 0.0 + (t + xlogx[u])
        for a in range(1, n_nz):
            s += within[:, a] + _gather(xlogx, only_row[:, a])
        for b in range(n_nz):
            s += _gather(xlogx, only_col[b])

        z_i, z_j = self.expressed[rows, None], self.expressed[None, cols]
        n = z_i + z_j - both
        neither = n_cells - n
        s_full = s + _gather(xlogx, neither)
        if scoring.include_zeros:
            total, s_table = torch.full_like(n, n_cells), s_full
        else:
            total, s_table = n, s
        y_i, y_j = total - z_i, total - z_j
        s_i = _gather(xlogx, y_i) + self.bins_xlogx[rows, None]
        s_j = _gather(xlogx, y_j) + self.bins_xlogx[None, cols]
        safe_float = total.clamp_min(1).to(f64)  # T, where T > 0 (T <= N: in the tables)
        mi = _gather(self.log2, total) + ((s_table - s_i) - s_j) / safe_float
        if scoring.miller_madow:
            m = (by_col_bin > 0).sum((0, 2)) + (only_row > 0).sum(1) + (only_col > 0).sum(0)
            if scoring.include_zeros:
                m += neither > 0
            m_i = self.occupied[rows, None] + (y_i > 0)
            m_j = self.occupied[None, cols] + (y_j > 0)
            mi = mi + (m_i + m_j - m - 1).to(f64) / ((2.0 * safe_float) * _LN2)
        mi = torch.where(total > 0, mi, 0.0).clamp_min_(0.0)
        if gram is not None:
            mi = self._signed(mi, gram, rows, cols)
        mi = (mi + 0.0).to(torch.float32)  # never -0.0
        if not scoring.g_test:
            return mi, None, None
        return (mi, *self._g_test(s_full, z_i, z_j, rows, cols))

    def _signed(self, mi, gram, rows: slice, cols: slice):
        """``mi`` with the sign of each pair's covariance; 0 where it is undefined or 0 to
        working precision (within its rounding bound)."""
        import torch

        n_cells = float(self.n_cells)
        sums_i, sums_j = self.value_sums[rows, None], self.value_sums[None, cols]
        norms_i, norms_j = self.value_norms[rows, None], self.value_norms[None, cols]
        products = sums_i * sums_j
        covariance = n_cells * gram - products
        bound = SIGN_TOLERANCE * ((n_cells * norms_i) * norms_j + products.abs())
        defined = self.varies[rows, None] & self.varies[None, cols] & (covariance.abs() > bound)
        return torch.where(defined, torch.where(covariance < 0, -mi, mi), 0.0)

    def _g_test(self, s_full, z_i, z_j, rows: slice, cols: slice) -> tuple:
        """Williams-corrected G statistic of each pair's full table and its dof."""
        import torch

        n_cells, xlogx, f64 = self.n_cells, self.xlogx, torch.float64
        if n_cells > 0:
            g_i = _gather(xlogx, n_cells - z_i) + self.bins_xlogx[rows, None]
            g_j = _gather(xlogx, n_cells - z_j) + self.bins_xlogx[None, cols]
            plugin = self.log2_cells + ((s_full - g_i) - g_j) / float(n_cells)
        else:
            plugin = torch.zeros_like(s_full)
        g = plugin.clamp_min_(0.0) * ((2.0 * n_cells) * _LN2)
        dof = (self.levels[rows, None] - 1) * (self.levels[None, cols] - 1)
        n_float = float(n_cells)
        inverse_i = n_float * self.full_inverse[rows, None] - 1.0
        inverse_j = n_float * self.full_inverse[None, cols] - 1.0
        q = 1.0 + (inverse_i * inverse_j) / ((6.0 * n_float) * dof.clamp_min(1).to(f64))
        statistic = torch.where(dof > 0, g / q, 0.0)
        return statistic, dof.to(torch.int32)


def _gather(table, index):
    """``table[index]`` for an integer tensor ``index`` of any shape."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)


def _mirror_upper(out) -> None:
    """Zero the diagonal of a row block and copy the transpose of the rows above to the
    left of it: a block's entries left of its diagonal are its upper entries mirrored."""
    import torch

    square = out[:, : out.shape[0]]
    square.diagonal().zero_()
    lower = torch.ones(square.shape, dtype=torch.bool, device=square.device).tril_(-1)
    square.copy_(square.T.where(lower, square))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _padded_genes(n_genes: int, n_nz: int) -> int:
    """Genes of a padded tile: a multiple of 8, with more than 16 one-hot rows."""
    padded = _round_up(max(n_genes, 1), 8)
    while padded * n_nz <= 16:
        padded += 8
    return padded


def _finish_rows(width_j: int, n_nz: int, budget: int) -> int:
    """Rows finished at once so that the finish's temporaries fit ``budget`` bytes.

    Per row and column: the counts transposed (``n_nz**2`` integers of 8 bytes, and their
    mask for Miller–Madow), the per-bin sums and their gathers (a few ``n_nz`` of 8 bytes).
    """
    return max(1, budget // (max(width_j, 1) * (n_nz + 1) * (n_nz + 8) * 8))
