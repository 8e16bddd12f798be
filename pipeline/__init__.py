"""The quarterly batch: stages, orchestration and all file I/O of vectors, registers and reports.

Three process-wide settings are made here, before numpy or GDAL first load, each unless the
environment already sets it (export the variable to choose otherwise):

* ``GDAL_CACHEMAX=256``: GDAL's raster block cache defaults to 5 % of the machine's memory, which
  would let a long run's resident memory grow with the area it has read; 256 MB per process keeps
  memory bounded by the tile size.
* ``NUMPY_MADVISE_HUGEPAGE=0``: numpy asks the kernel for transparent huge pages for every array
  of 4 MB or more. Where the kernel compacts memory on demand for such requests (THP ``defrag``
  set to ``madvise``, a common default), first touching each fresh tile-sized array stalls; a
  batch allocates thousands. Without the request, detection and ingest ran 8-10 % faster on the
  8192² benchmark quarter (``benchmarks/speed.py``).
* glibc's allocator keeps freed tile-sized arrays for reuse (unless ``MALLOC_MMAP_THRESHOLD_``
  is set): by default every array over a few MB is a fresh ``mmap`` whose pages the kernel
  faults in and zeroes on first touch, and is unmapped when freed, so each tile paid for its
  memory again. Arrays up to ``_MMAP_THRESHOLD`` now come from the heap, and up to
  ``_TRIM_THRESHOLD`` of freed heap is kept rather than returned; peak memory is unchanged, as
  the next tile needs the same arrays. Detection takes about 15 % less CPU.

Pool workers inherit all three. A Dask worker started on another machine needs the first two in
its own environment; the third is made whenever ``pipeline`` is imported.
"""

import ctypes
import os
import sys

os.environ.setdefault("GDAL_CACHEMAX", "256")
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

#: Largest allocation (bytes) served from the heap instead of its own mmap: glibc's ceiling,
#: above a 4-band float32 tile of 1152² (21 MB).
_MMAP_THRESHOLD = 32 * 1024 * 1024
#: Freed memory (bytes) at the top of the heap kept for reuse before it is returned.
_TRIM_THRESHOLD = 1024 * 1024 * 1024


def _reuse_freed_arrays() -> bool:
    """Ask glibc to serve tile-sized arrays from its heap and keep them when freed; False where
    the C library is not glibc or the environment chose its own thresholds."""
    if not sys.platform.startswith("linux") or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, _MMAP_THRESHOLD)) and bool(
        mallopt(m_trim_threshold, _TRIM_THRESHOLD)
    )


_reuse_freed_arrays()
