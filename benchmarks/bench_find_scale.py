"""Benchmark topic ``find_scale``: a year of STUDY-level C-FIND on the scale set (2,000 studies), with RSS.

The rows come from :func:`benchmarks.bench_find.scale_rows` (``make bench ONLY=find_scale``).
"""

from __future__ import annotations

from benchmarks.bench_find import scale_rows as rows

__all__ = ["rows"]
