"""Fan an issue out: a pending delivery per reader, in the segment of the email they get — and with it what
only some readers get: the verdicts that changed, for the readers who got them (issue 16, item 3), and the
readers' votes on the previous issue, for the readers of that issue (issue 17, item 5).

Both ride along with an issue that has new comparisons; they never open one by themselves. Each planned
segment splits by which of the earlier issues concerned its readers got, each part a segment of its own
(rendered once, like any other), and the fan-out's one INSERT puts every reader in their segment or part
(storage.issues.fan_out_segments).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from digest.claim.local_time import DueTimes
from digest.claim.selection import SegmentPlan, segment_key
from storage.changes import audience_got, claim_changes
from storage.issues import FanOutTarget, add_segment, fan_out_segments, segment_sizes
from storage.models import Segment


@dataclass(frozen=True)
class Carry:
    """What only the readers of earlier issues get: the changes claimed (each for the readers of its original
    issue) and the previous issue whose readers get its readers' results; by what the audience got."""

    changes: list[tuple[int, int]]  # (change id, original issue id)
    results_from: int | None  # the previous issue, when this one carries its readers' results
    origins: list[int]  # bit k of a reader's "got" is origins[k]
    audience: dict[tuple[str, int], int]  # (categories followed, got) → readers

    def _got(self, got: int, issue_id: int) -> bool:
        return bool(got >> self.origins.index(issue_id) & 1)

    def change_ids(self, got: int) -> list[int]:
        return [change_id for change_id, origin in self.changes if self._got(got, origin)]

    def results(self, got: int) -> bool:
        return self.results_from is not None and self._got(got, self.results_from)


@dataclass
class FannedOut:
    segments: list[Segment] = field(default_factory=list)
    changes: int = 0  # verdict changes carried
    told: int = 0  # readers who get them
    results_told: int = 0  # readers who get the previous issue's readers' results

    @property
    def deliveries(self) -> int:
        return sum(segment.size for segment in self.segments)


def fan_out_issue(*, session, issue_id: int, planned: Sequence[SegmentPlan], now: datetime,
                  results_from: int | None = None, engaged_first: bool = False, due: DueTimes | None = None) -> FannedOut:
    """Segments and deliveries for ``planned``, plus the parts that carry verdict changes or, for the readers
    of issue ``results_from``, its readers' results; in the opening's transaction. ``due``: each delivery's
    due time by its reader's zone (DIGEST_DELIVERY=local)."""
    carry = _claim_carry(session=session, issue_id=issue_id, now=now, results_from=results_from)
    result = FannedOut(changes=len(carry.changes) if carry else 0)
    targets = []
    for plan in planned:
        segment = add_segment(session=session, issue_id=issue_id, key=plan.key, audience=plan.audience,
                              comparison_ids=plan.comparison_ids)
        parts = _parts(session=session, issue_id=issue_id, plan=plan, carry=carry) if carry else {}
        targets.append(FanOutTarget(plan.category_sets, segment.id, {got: part.id for got, part in parts.items()}))
        result.segments += [segment, *parts.values()]
    # Every segment in one INSERT: the audience is read once (storage.issues.fan_out_segments).
    fan_out_segments(session=session, issue_id=issue_id, targets=targets, now=now,
                     origins=carry.origins if carry else (), engaged_first=engaged_first, due=due)
    sizes = segment_sizes(session=session, issue_id=issue_id)
    for segment in result.segments:
        segment.size = sizes.get(segment.id, 0)
    if carry:
        result.told = sum(segment.size for segment in result.segments if segment.change_ids)
        result.results_told = sum(segment.size for segment in result.segments if segment.reader_results)
    return result


def _claim_carry(*, session, issue_id: int, now: datetime, results_from: int | None) -> Carry | None:
    changes = claim_changes(session=session, issue_id=issue_id)
    origins = sorted({origin for _, origin in changes} | ({results_from} if results_from is not None else set()))
    if not origins:
        return None
    return Carry(changes=changes, results_from=results_from, origins=origins,
                 audience=audience_got(session=session, now=now, origins=origins))


def _parts(*, session, issue_id: int, plan: SegmentPlan, carry: Carry) -> dict[int, Segment]:
    """A segment for each combination of original issues that some reader of ``plan`` got, by its bits."""
    sets = set(plan.category_sets)
    parts = {}
    for got in sorted({got for categories, got in carry.audience if got and categories in sets}):
        change_ids, results = carry.change_ids(got), carry.results(got)
        label = f"{plan.audience}|changes:{','.join(map(str, change_ids))}|results:{results}"
        parts[got] = add_segment(session=session, issue_id=issue_id, key=segment_key(plan.comparison_ids, label),
                                 audience=plan.audience, comparison_ids=plan.comparison_ids, change_ids=change_ids,
                                 reader_results=results)
    return parts
