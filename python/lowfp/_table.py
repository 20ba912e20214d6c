"""A small table of rows (dicts with the same keys): what the research tools return.

One home for the table that :func:`lowfp.qat.quantize_weights`, :mod:`lowfp.stats` and
``LowPrecision(track=True)`` hand back, so that each can be read as rows, as columns, printed,
or written to CSV. Rejected: pandas (an extra dependency for a list of dicts).
"""

from __future__ import annotations

import csv
from typing import Any, Dict, Iterator, List, Optional


class Table:
    """Rows of named values, in order.

    Attributes:
        rows: list of dicts (one per row; every row has the same keys, in ``columns`` order).
    """

    def __init__(self, rows: Optional[List[Dict[str, Any]]] = None):
        self.rows: List[Dict[str, Any]] = list(rows or [])

    @property
    def columns(self) -> List[str]:
        """The keys of the rows (of the first row; [] when empty)."""
        return list(self.rows[0]) if self.rows else []

    def column(self, name: str) -> List[Any]:
        """The values of one column, in row order.

        Raises:
            KeyError: no such column (the message lists the columns).
        """
        if self.rows and name not in self.rows[0]:
            raise KeyError(f"column {name!r}: the table has {self.columns}")
        return [r[name] for r in self.rows]

    def append(self, row: Dict[str, Any]) -> None:
        self.rows.append(dict(row))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def to_csv(self, path: str) -> None:
        """Write the rows to a CSV file with a header line (floats in repr precision)."""
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})

    def __repr__(self) -> str:
        if not self.rows:
            return "Table(empty)"
        cols = self.columns

        def cell(v: Any) -> str:
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        body = [[cell(r[c]) for c in cols] for r in self.rows]
        widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
        return "\n".join(lines)
