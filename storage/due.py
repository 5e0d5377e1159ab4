"""A delivery's due time in the fan-out's SQL (DIGEST_DELIVERY=local, issue 19): the due times of the zones
readers live in (digest.claim.local_time.DueTimes) as one CASE over ``subscriber.timezone``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import bindparam

from storage.types import UTCDateTime

if TYPE_CHECKING:
    from digest.claim.local_time import DueTimes


def due_sql(times: DueTimes | None, reader: str) -> tuple[str, dict, list]:
    """The due time of ``reader``'s row as a SQL expression: (expression, parameters, bindparams typed for the
    statement). Only zones whose time differs from the default get a branch; "NULL" when every reader is due
    at once (None: no local delivery)."""
    if times is None:
        return "NULL", {}, []
    branches, parameters, binds = [], {}, []
    for k, (zone, due) in enumerate(sorted(times.by_zone.items())):
        if due == times.default:
            continue
        parameters[f"zone_{k}"] = zone
        if due is None:
            branches.append(f"WHEN :zone_{k} THEN NULL")
            continue
        parameters[f"due_{k}"] = due
        binds.append(bindparam(f"due_{k}", type_=UTCDateTime()))
        branches.append(f"WHEN :zone_{k} THEN :due_{k}")
    default = "NULL"
    if times.default is not None:
        parameters["due_default"], default = times.default, ":due_default"
        binds.append(bindparam("due_default", type_=UTCDateTime()))
    if not branches:
        return default, parameters, binds
    return f"CASE {reader}.timezone {' '.join(branches)} ELSE {default} END", parameters, binds
