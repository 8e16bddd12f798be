"""The quarterly batch: stages, orchestration and all file I/O of vectors, registers and reports.

GDAL's raster block cache defaults to 5 % of the machine's memory, which would let a long run's
resident memory grow with the area it has read. Unless ``GDAL_CACHEMAX`` is set in the environment,
tuban caps it at 256 MB per process so that memory stays bounded by the tile size.
"""

import os

os.environ.setdefault("GDAL_CACHEMAX", "256")
