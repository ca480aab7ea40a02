"""The token-count (M) buckets tuned per operator, and the one place that names them.

A compiled model serves any M with one PrimFunc per operator.  The tuner schedules and tunes one
variant per bucket (with ``bitnet.m_hint`` = the bucket's ``tune_m``, measured at that M), and
the compiler stitches the variants into one PrimFunc that branches on the symbolic M at run time
(:mod:`bitnet_tvm.tuning.stitch`).  The buckets cover every M >= 1 without gaps:

========  ==========  ======  =====================================================
bucket    M           tuned   schedule family (CPU rules)
========  ==========  ======  =====================================================
decode    1           M=1     GEMV / VNNI decode tile
small     2 - 8       M=8     GEMV / VNNI decode tile
medium    9 - 64      M=32    GEMM / VNNI prefill tile
prefill   >= 65       M=128   GEMM / VNNI prefill tile
========  ==========  ======  =====================================================

An M between two tuned sizes runs the kernel of the bucket that contains it (e.g. M=5 the
``small`` kernel tuned at M=8, M=100 the ``prefill`` kernel tuned at M=128); every variant is
correct for any M, the buckets only choose which one is fastest.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUCKETS", "Bucket", "bucket_for", "get_buckets"]


@dataclass(frozen=True)
class Bucket:
    """A range of token counts served by one tuned kernel variant.

    Attributes
    ----------
    name : str
        Short name (``decode``, ``small``, ...), used in reports and ``--buckets``.
    low, high : int, int or None
        Smallest and largest M of the bucket (``high`` None: unbounded).
    tune_m : int
        The M the variant is tuned and measured at; also its ``bitnet.m_hint``.
    """

    name: str
    low: int
    high: int | None
    tune_m: int

    def contains(self, m: int) -> bool:
        """Whether token count ``m`` falls in this bucket."""
        return m >= self.low and (self.high is None or m <= self.high)

    def label(self) -> str:
        """``"2-8"``-style range text."""
        if self.high is None:
            return f">={self.low}"
        return str(self.low) if self.high == self.low else f"{self.low}-{self.high}"


BUCKETS: tuple[Bucket, ...] = (
    Bucket("decode", 1, 1, 1),
    Bucket("small", 2, 8, 8),
    Bucket("medium", 9, 64, 32),
    Bucket("prefill", 65, None, 128),
)


def bucket_for(m: int) -> Bucket:
    """The bucket whose kernel runs for ``m`` tokens."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"token count must be a positive int, got {m!r}")
    return next(b for b in BUCKETS if b.contains(m))


def get_buckets(names: str | list[str] | tuple[str, ...] | None) -> tuple[Bucket, ...]:
    """Buckets by name (comma-separated string or list); None or ``"all"``: every bucket."""
    if names is None or names == "all":
        return BUCKETS
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    known = {b.name: b for b in BUCKETS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"buckets: unknown {unknown or names!r}; expected some of {list(known)}")
    return tuple(b for b in BUCKETS if b.name in names)
