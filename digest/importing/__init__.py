"""Imports: comparisons from the site's JSON export, subscribers from an operator's CSV.

- ``import_comparisons``: see ``digest.importing.comparisons``; ``load_comparisons``, the file read and
  checked whole: ``digest.importing.comparison_file``.
- ``add_subscriber`` / ``import_subscribers``: see ``digest.importing.subscribers``; what an import did,
  and ``ImportStopped`` for a file that cannot be read to its end: ``digest.importing.outcome``.
- ``normalize_address``: email-validator's verdict, fast for plain addresses (``digest.importing.addresses``).
"""

from digest.importing.addresses import Address, InvalidAddress, normalize_address
from digest.importing.comparison_file import load_comparisons
from digest.importing.comparisons import ComparisonImport, import_comparisons
from digest.importing.errors import InvalidImport
from digest.importing.outcome import ImportStopped, RowError, SubscriberImport
from digest.importing.subscribers import AddResult, add_subscriber, import_subscribers

__all__ = [
    "AddResult", "Address", "ComparisonImport", "ImportStopped", "InvalidAddress", "InvalidImport", "RowError",
    "SubscriberImport",
    "add_subscriber", "import_comparisons", "import_subscribers", "load_comparisons", "normalize_address",
]
