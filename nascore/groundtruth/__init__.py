"""Ground truth to measure a method's ranking against, shipped in ``nascore/resources``.

* :mod:`~nascore.groundtruth.nb201_table` — NAS-Bench-201's accuracy tables (all 15,625 cells);
* :mod:`~nascore.groundtruth.testbed` — every architecture of a tiny space trained standalone, and
  the rank metrics (Kendall tau, top-k hit rate) the method tests use.
"""
