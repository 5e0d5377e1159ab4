"""Carry the verdicts that changed to the readers who got them (issue 16, item 3), while an issue opens.

The changes ride along with an issue that has new comparisons; they never open one by themselves. A
reader gets the changes of the comparisons they received: each segment of the new issue splits by which
of the original issues its readers got (storage.changes), and every part is a segment of its own —
rendered once, like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from digest.claim.selection import segment_key
from storage.changes import claim_changes, move_readers, reader_groups
from storage.issues import add_segment
from storage.models import Segment


def carry_changes(*, session, issue_id: int, segments: Sequence[Segment]) -> tuple[int, int]:
    """Claim the waiting changes into the new issue and move their readers to segments that carry them;
    (changes carried, readers who get them). In the opening's transaction, after the fan-out."""
    changes = claim_changes(session=session, issue_id=issue_id)
    if not changes:
        return 0, 0
    origins = sorted({origin for _, origin in changes})
    by_id = {segment.id: segment for segment in segments}
    readers = 0
    for segment_id, got, _ in reader_groups(session=session, issue_id=issue_id, origins=origins):
        base = by_id[segment_id]
        change_ids = [change_id for change_id, origin in changes if got >> origins.index(origin) & 1]
        comparison_ids = [int(i) for i in base.comparison_ids.split(",") if i]
        label = f"{base.audience}|changes:{','.join(map(str, change_ids))}"
        carrying = add_segment(session=session, issue_id=issue_id, key=segment_key(comparison_ids, label),
                               audience=base.audience, comparison_ids=comparison_ids, change_ids=change_ids)
        carrying.size = move_readers(session=session, issue_id=issue_id, origins=origins, got=got,
                                     from_segment=base.id, to_segment=carrying.id)
        base.size -= carrying.size
        readers += carrying.size
    return len(changes), readers
