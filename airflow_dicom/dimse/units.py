"""Quantities as people read them in log lines."""

from __future__ import annotations


def size_text(n: int) -> str:
    """``1.5 MiB``, ``12.0 KiB`` or ``512 B``.

    :param n: a number of bytes.
    """
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"
