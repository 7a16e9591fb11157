"""The local Redis Cluster fixture's class, kept where the tests import it from.

It lives in ``benchmarks/cluster.py`` since ``benchmarks.scale_out`` starts one too (the
``benchmarks`` package ships; ``tests`` does not).
"""

from benchmarks.cluster import LocalCluster, missing_binaries

__all__ = ["LocalCluster", "missing_binaries"]
