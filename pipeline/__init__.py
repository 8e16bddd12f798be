"""The quarterly batch: stages, orchestration and all file I/O of vectors, registers and reports.

Two process-wide settings are made here, before numpy or GDAL first load, each unless the
environment already sets it (export the variable to choose otherwise):

* ``GDAL_CACHEMAX=256``: GDAL's raster block cache defaults to 5 % of the machine's memory, which
  would let a long run's resident memory grow with the area it has read; 256 MB per process keeps
  memory bounded by the tile size.
* ``NUMPY_MADVISE_HUGEPAGE=0``: numpy asks the kernel for transparent huge pages for every array
  of 4 MB or more. Where the kernel compacts memory on demand for such requests (THP ``defrag``
  set to ``madvise``, a common default), first touching each fresh tile-sized array stalls; a
  batch allocates thousands. Without the request, detection and ingest ran 8-10 % faster on the
  8192² benchmark quarter (``benchmarks/speed.py``).

Pool workers inherit both. A Dask worker started on another machine needs them in its own
environment.
"""

import os

os.environ.setdefault("GDAL_CACHEMAX", "256")
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
