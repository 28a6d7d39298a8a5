"""The ``gpu`` backend: co-occurrence counts as one-hot matrix products (PyTorch).

With ``Y`` the one-hot of the nonzero bins (one row per ``(gene, bin)``, one column per
cell), the counts of two gene tiles ``I`` and ``J`` are the product ``Y_I @ Y_J.T``
(DESIGN.md §3). On CUDA the one-hot tiles are ``int8`` and the product is
``torch._int_mm`` (exact ``int32`` counts on the tensor cores); elsewhere (``device="cpu"``,
how CI runs it) it is a ``float32`` product, exact because a chunk never holds more than
``2**24`` cells. Chunks of cells are added in integers. The signs come from a ``float64``
product of the value tiles, and MI is finished on the device in ``float64``, vectorised
over the whole tile; only the ``float32`` row block travels back to the host.

The finish (:meth:`_GeneStats.mutual_information`) adds its terms one element-wise
operation at a time, in a fixed order, and takes ``log2`` from a table: no reduction whose
order depends on the shape of a tile or on the device. So a pair's MI depends only on its
counts and the marginals, and :meth:`TorchKernel.row_block` (fused: tile counts finished
where they are made) equals ``finish_block(start, count_block(start, stop))`` bit for bit,
and so does the finish of counts summed over chunks of the cells. (The signs come from
``float64`` value products; summed in another order, over chunks, their last bits may
differ, which can change a sign only where a covariance is ~0.)

Every gene has the same ``n_nz = max_bins - 1`` one-hot rows; the rows of bins a gene
does not have stay zero, and contribute nothing since ``xlogx[0] == 0``. Tiles are
padded with empty genes to the shapes ``torch._int_mm`` needs.
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

from ._base import BinnedGenes, CountBlock, Kernel

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
    data, signed, n_jobs, device
        As :class:`~geneverse.kernels._base.Kernel`. ``device=None`` means ``"cuda"`` (an
        error without a CUDA device); ``"cpu"`` runs the same algorithm on the CPU with
        ``n_jobs`` torch threads.
    tile_genes
        Genes per tile; by default from the free device memory on CUDA, 256 on a CPU.
    chunk_cells
        Cells per chunk of a product; by default all cells when they fit on CUDA, 4096 on
        a CPU. Chunks are added in integers, so any value gives the same result.
    gemm
        ``"int8"`` (``torch._int_mm``, CUDA only; the default there), ``"half"`` (``float16``
        inputs, ``float32`` output, CUDA only) or ``"float32"`` (the default elsewhere).
    """

    name = "gpu"

    def __init__(
        self,
        data: BinnedGenes,
        *,
        signed: bool,
        n_jobs: int,
        device: str | None = None,
        tile_genes: int | None = None,
        chunk_cells: int | None = None,
        gemm: str | None = None,
    ) -> None:
        import torch

        super().__init__(data, signed=signed, n_jobs=n_jobs, device=device)
        self._torch = torch
        self._dev = torch.device("cuda" if device is None else device)
        self._n_nz = max(data.max_bins - 1, 1)
        self._upload(data)
        self._plan = self._make_plan(tile_genes, chunk_cells, gemm)
        pad = _padded_genes(self._plan.tile_genes, self._n_nz)
        self._stats = _GeneStats.build(data, self._n_nz, pad, torch, self._dev)

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
        if self.signed:
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
        n_genes, n_cells = max(self.data.n_genes, 1), max(self.data.n_cells, 1)
        if cuda and (tile_genes is None or chunk_cells is None):
            auto_tile, auto_chunk = self._cuda_sizes(n_genes, n_cells, gemm)
        else:
            auto_tile, auto_chunk = _CPU_TILE_GENES, _CPU_CHUNK_CELLS
        tile = min(tile_genes or auto_tile, n_genes)
        chunk = min(chunk_cells or auto_chunk, n_cells)
        if gemm != "int8":
            chunk = min(chunk, _FLOAT32_EXACT)
        if tile < 1 or chunk < 1:
            raise ValueError("tile_genes and chunk_cells must be positive.")
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
        """Device bytes of the buffers of one tile pair (one-hot, counts, values, gram)."""
        width = _padded_genes(tile, self._n_nz) * self._n_nz
        chunk = _round_up(chunk, 8)
        total = 2 * width * chunk * one_hot + width * width * 4 * (2 if chunked else 1)
        if self.signed:
            total += 2 * tile * chunk * 8 + tile * tile * 8 * 2
        total += _CUDA_MAX_TILE_GENES * self.data.n_genes * 4  # the row block
        return total

    # -- the row block --------------------------------------------------------------------

    def row_block(self, start: int, stop: int) -> np.ndarray:
        """Signed MI of genes ``start:stop`` against genes ``start:n_genes`` (float32).

        Fused: each tile's counts are finished on the device where they are made. Equal
        bit for bit to ``finish_block(start, count_block(start, stop))``.
        """
        self._check_rows(start, stop)
        with self._torch_threads():
            return self._to_host(self._row_block(start, stop))

    def count_block(self, start: int, stop: int) -> CountBlock:
        """Co-occurrence counts and value products of genes ``start:stop``, on the host.

        See :class:`~geneverse.kernels._base.CountBlock`: ``int64`` counts of shape
        ``(stop - start, n_nz, n_genes - start, n_nz)`` with ``n_nz = max_bins - 1``, and
        ``float64`` products (zeros when unsigned). The tiles are those of
        :meth:`row_block` (so are the products, to the last bit); left of the block's
        diagonal the counts are those of the rows above, with the roles swapped.
        """
        self._check_rows(start, stop)
        n_rows, n_cols, n_nz = stop - start, self.data.n_genes - start, self._n_nz
        counts = np.zeros((n_rows, n_nz, n_cols, n_nz), dtype=np.int64)
        products = np.zeros((n_rows, n_cols), dtype=np.float64)
        with self._torch_threads():
            for i0, i1, j0, j1 in self._upper_tiles(start, stop):
                tile, gram = self._tile_counts(i0, i1, j0, j1)
                width_i, width_j = tile.shape[0] // n_nz, tile.shape[1] // n_nz
                tile4 = tile.view(width_i, n_nz, width_j, n_nz)[: i1 - i0, :, : j1 - j0]
                rows, cols = slice(i0 - start, i1 - start), slice(j0 - start, j1 - start)
                counts[rows, :, cols, :] = tile4.cpu().numpy()
                if gram is not None:
                    products[rows, cols] = gram[: i1 - i0, : j1 - j0].cpu().numpy()
        for r in range(1, n_rows):  # left of the diagonal: the rows above, roles swapped
            counts[r, :, :r, :] = counts[:r, :, r, :].transpose(2, 0, 1)
            products[r, :r] = products[:r, r]
        return CountBlock(counts=counts, products=products)

    def finish_block(self, start: int, block: CountBlock) -> np.ndarray:
        """Signed MI of the row block whose counts are ``block``, with this data's marginals.

        The rows are ``start:start + len(block.counts)``; the counts may be those of other
        cells (summed over chunks): only the marginals of :attr:`data` are used, so the
        kernel may be built on a summary with no entries. The counts go to the device in
        slices of rows and are finished there as in :meth:`row_block`.
        """
        torch, n_genes, n_nz = self._torch, self.data.n_genes, self._n_nz
        counts, products = np.asarray(block.counts), np.asarray(block.products)
        n_rows = self._check_count_block(start, counts, products, n_nz)
        n_cols = n_genes - start
        # Half the budget: the uploaded slice of counts is as large as the finish's copy.
        step = _finish_rows(n_cols, n_nz, self._finish_budget // 2)
        with self._torch_threads():
            out = torch.zeros((n_rows, n_cols), dtype=torch.float32, device=self._dev)
            for r0 in range(0, n_rows, step):
                r1 = min(n_rows, r0 + step)
                part = torch.from_numpy(np.ascontiguousarray(counts[r0:r1], dtype=np.int64))
                gram = None
                if self.signed:
                    gram = torch.from_numpy(np.ascontiguousarray(products[r0:r1], np.float64))
                    gram = gram.to(self._dev)
                out[r0:r1] = self._finish(part.to(self._dev), gram, start + r0, start)
            _mirror_upper(out)
            return self._to_host(out)

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

    def _row_block(self, start: int, stop: int) -> torch.Tensor:
        """The row block on the device, from the tiles of :meth:`_upper_tiles`; left of its
        diagonal the block mirrors the rows above (as in :meth:`finish_block`)."""
        torch, n_genes = self._torch, self.data.n_genes
        out = torch.zeros((stop - start, n_genes - start), dtype=torch.float32, device=self._dev)
        for i0, i1, j0, j1 in self._upper_tiles(start, stop):
            out[i0 - start : i1 - start, j0 - start : j1 - start] = self._tile(i0, i1, j0, j1)
        _mirror_upper(out)
        return out

    def _upper_tiles(self, start: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
        """``(i0, i1, j0, j1)``: the tiles of genes ``I = start:stop`` against ``J = start:``
        that a row block is computed from.

        A tile left of the block's diagonal (``j1 <= i0``) is left out: that part of the
        block mirrors the rows above. A diagonal tile comes in the pieces of
        :meth:`_diagonal_pieces`.
        """
        step, n_genes = self._plan.tile_genes, self.data.n_genes
        for i0 in range(start, stop, step):
            i1 = min(stop, i0 + step)
            for j0 in range(start, n_genes, step):
                j1 = min(n_genes, j0 + step)
                if j1 <= i0:
                    continue
                if (j0, j1) == (i0, i1):
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

    def _to_host(self, out: torch.Tensor) -> np.ndarray:
        """The block as a numpy array.

        From CUDA the copy goes into memory that is already paged in: copying into a
        fresh array pays a page fault per 4 KiB inside the transfer (measured on an H200:
        120 ms instead of 280 ms for a 4096 x 20000 block; pinned memory gave 160 ms).
        """
        if self._dev.type != "cuda":
            return out.cpu().numpy()
        host = np.empty(tuple(out.shape), dtype=np.float32)
        host.fill(0.0)
        self._torch.from_numpy(host).copy_(out)
        return host

    def _tile(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        """Signed MI of genes ``i0:i1`` against ``j0:j1``, float32, on the device."""
        counts, gram = self._tile_counts(i0, i1, j0, j1)
        width_i, width_j = counts.shape[0] // self._n_nz, counts.shape[1] // self._n_nz
        counts4 = counts.view(width_i, self._n_nz, width_j, self._n_nz)
        return self._finish(counts4, gram, i0, j0)[: i1 - i0, : j1 - j0]

    def _finish(self, counts4, gram, i0: int, j0: int) -> torch.Tensor:
        """Signed MI (float32) of genes ``i0:`` against ``j0:`` from counts ``(rows, n_nz,
        columns, n_nz)`` and their gram (``None`` when unsigned), in slices of rows.

        The one finish of the fused tiles and of :meth:`finish_block`; an entry does not
        depend on the slice or tile it is finished in.
        """
        stats, torch = self._stats, self._torch
        n_rows, n_cols = counts4.shape[0], counts4.shape[2]
        step = _finish_rows(n_cols, self._n_nz, self._finish_budget)
        mi = torch.empty((n_rows, n_cols), dtype=torch.float32, device=self._dev)
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            part = stats.mutual_information(counts4[r0:r1], i0 + r0, j0)
            if gram is not None:  # 0 keeps no sign (never -0.0)
                part.mul_(stats.signs(gram[r0:r1], i0 + r0, j0)).masked_fill_(part == 0, 0.0)
            mi[r0:r1] = part
        return mi

    def _tile_counts(
        self, i0: int, i1: int, j0: int, j1: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Integer counts ``(width_i * n_nz, width_j * n_nz)`` and the gram, over cell chunks."""
        torch, chunk = self._torch, self._plan.chunk_cells
        n_cells, same = self.data.n_cells, (i0, i1) == (j0, j1)
        width_i, width_j = _padded_genes(i1 - i0, self._n_nz), _padded_genes(j1 - j0, self._n_nz)
        counts = gram = None
        for c0 in range(0, n_cells, chunk):
            c1 = min(n_cells, c0 + chunk)
            y_i = self._one_hot(i0, i1, width_i, c0, c1)
            y_j = y_i if same else self._one_hot(j0, j1, width_j, c0, c1)
            part = self._product(y_i, y_j)
            counts = part if counts is None else counts.add_(part)
            if self.signed:
                x_i = self._dense_values(i0, i1, width_i, c0, c1)
                x_j = x_i if same else self._dense_values(j0, j1, width_j, c0, c1)
                g = x_i @ x_j.T
                gram = g if gram is None else gram.add_(g)
        if counts is None:  # no cells at all
            shape = (width_i * self._n_nz, width_j * self._n_nz)
            counts = torch.zeros(shape, dtype=torch.int32, device=self._dev)
            if self.signed:
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
        """Dense ``float64`` values ``(width, cells)`` of genes ``g0:g1`` over cells ``c0:c1``."""
        n_cols = _round_up(c1 - c0, 8)
        x = self._torch.zeros((width, n_cols), dtype=self._torch.float64, device=self._dev)
        flat = x.view(-1)
        for piece, keep, genes, cells in self._entries(g0, g1, c0, c1):
            values = self._values[piece] if keep is None else self._values[piece][keep]
            flat[genes * n_cols + cells] = values
        return x


@dataclass(frozen=True)
class _GeneStats:
    """Per-gene constants of the finish on the device, padded with empty genes at the end."""

    bin_counts: Any  # (n_genes + pad, n_nz) int64: cells in bins 1..n_nz
    expressed: Any  # (n_genes + pad,) int64
    s_bins: Any  # (n_genes + pad,) float64: sum_a xlogx[bin_counts[g, a]]
    value_sums: Any
    varies: Any
    xlogx: Any  # (n_cells + 1,) float64: m * log2(m)
    log2: Any  # (n_cells + 1,) float64: log2(m), 0 at m = 0
    n_cells: int

    @classmethod
    def build(cls, data: BinnedGenes, n_nz: int, pad: int, torch, dev) -> _GeneStats:
        """Pad every per-gene array with ``pad`` empty genes, so any padded tile can slice it."""
        bin_counts = np.asarray(data.bin_counts, dtype=np.int64)
        bins = np.zeros((data.n_genes + pad, n_nz), dtype=np.int64)
        bins[: data.n_genes, : bin_counts.shape[1] - 1] = bin_counts[:, 1:]
        xlogx = np.asarray(data.xlogx, dtype=np.float64)
        m = np.arange(xlogx.shape[0], dtype=np.float64)
        log2 = np.log2(m, out=np.zeros_like(m), where=m > 0)

        def padded(values: np.ndarray, dtype) -> Any:
            full = np.zeros(data.n_genes + pad, dtype=dtype)
            full[: data.n_genes] = values
            return torch.as_tensor(full).to(dev)

        return cls(
            bin_counts=torch.as_tensor(bins).to(dev),
            expressed=torch.as_tensor(bins.sum(axis=1)).to(dev),
            s_bins=padded(xlogx[bin_counts].sum(axis=1), np.float64),
            value_sums=padded(np.asarray(data.value_sums), np.float64),
            varies=padded(np.asarray(data.varies), np.bool_),
            xlogx=torch.as_tensor(xlogx).to(dev),
            log2=torch.as_tensor(log2).to(dev),
            n_cells=data.n_cells,
        )

    def mutual_information(self, counts4, i0: int, j0: int):
        """MI (float64, ``>= 0``) of genes ``i0:`` against ``j0:`` from their counts.

        ``counts4`` is ``(rows, n_nz, columns, n_nz)``, any integer dtype (DESIGN.md §3).
        Every floating-point sum is a sequence of element-wise additions in a fixed order
        (the numba kernel's: bins of ``j`` inside bins of ``i``, then the column
        marginals), and ``log2`` comes from a table: an entry depends on its counts and
        the marginals only, never on the shape of the slice, the tile or the device.
        Integer sums are exact in any order.
        """
        xlogx, torch_int64 = self.xlogx, self.expressed.dtype
        n_rows, n_nz, n_cols = counts4.shape[0], counts4.shape[1], counts4.shape[2]
        i1, j1 = i0 + n_rows, j0 + n_cols
        by_col_bin = counts4.new_empty((n_nz, n_rows, n_nz, n_cols), dtype=torch_int64)
        by_col_bin.copy_(counts4.permute(3, 0, 1, 2))  # (b, i, a, j)
        in_row_bin = by_col_bin.sum(0)  # (i, a, j): cells with i in a and j expressed
        in_col_bin = by_col_bin.sum(2)  # (b, i, j)
        both = in_row_bin.sum(1)

        within = _gather(xlogx, by_col_bin[0])  # (i, a, j): sum over b of xlogx[n_ij(a, b)]
        for b in range(1, n_nz):
            within += _gather(xlogx, by_col_bin[b])
        bins_i, bins_j = self.bin_counts[i0:i1], self.bin_counts[j0:j1]
        joint = within[:, 0] + _gather(xlogx, bins_i[:, 0, None] - in_row_bin[:, 0])
        for a in range(1, n_nz):
            joint += within[:, a] + _gather(xlogx, bins_i[:, a, None] - in_row_bin[:, a])
        for b in range(n_nz):
            joint += _gather(xlogx, bins_j[None, :, b] - in_col_bin[b])

        z_i, z_j = self.expressed[i0:i1, None], self.expressed[None, j0:j1]
        n = z_i + z_j - both
        entropy_i = _gather(xlogx, n - z_i) + self.s_bins[i0:i1, None]
        entropy_j = _gather(xlogx, n - z_j) + self.s_bins[None, j0:j1]
        n_float = n.to(xlogx.dtype).clamp_min_(1.0)
        # n <= n_cells for real pairs; a padded tile's filler rows (real genes whose counts
        # it leaves at 0, cut off afterwards) may exceed it.
        log2_n = _gather(self.log2, n.clamp_max(self.n_cells))
        mi = log2_n + (joint - entropy_i - entropy_j) / n_float
        return mi.clamp_min_(0.0).masked_fill_(n == 0, 0.0)

    def signs(self, gram, i0: int, j0: int):
        """Sign of the covariance of genes ``i0:`` and ``j0:`` from their gram, 0 where
        either gene is constant (DESIGN.md §2.4)."""
        i1, j1 = i0 + gram.shape[0], j0 + gram.shape[1]
        cov = self.n_cells * gram - self.value_sums[i0:i1, None] * self.value_sums[None, j0:j1]
        defined = self.varies[i0:i1, None] & self.varies[None, j0:j1]
        return cov.sign_().mul_(defined)


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

    Per row and column: the counts transposed (``n_nz**2`` integers of up to 8 bytes),
    the per-bin sums and their gathers (a few ``n_nz`` of 8 bytes).
    """
    return max(1, budget // (max(width_j, 1) * n_nz * (n_nz + 6) * 8))
