"""Data access: from an AnnData to the kernels' input.

Which matrix to read (``layer``, ``use_raw``) and which genes (:mod:`._genes`), reading it
in memory or chunk by chunk (:mod:`._matrix`, :mod:`._chunked`), and the one place where
values become bins (:mod:`._binning`), into the kernels' input type
(:class:`._binned.BinnedGenes`). Nothing here writes to the AnnData.
"""
