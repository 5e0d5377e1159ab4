"""Weekly AI Tool Verdicts: the weekly digest of the comparisons the site published."""

__version__ = "0.1.0"
