"""Sample issues for the email tests, built in memory (no database): typical, long-text, ten comparisons,
three and four tools, verdicts that changed; and the digest as one recipient gets it (substitutions filled,
as the outbox does)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from itertools import count
from pathlib import Path


from digest.config import Settings
from digest.importing.comparison_file import load_comparisons, parse_published_at
from digest.importing.comparisons import COMPARISON_FIELDS, REVIEW_FIELDS, TOOL_FIELDS
from digest.links import Links, Signer
from digest.render.email import Renderer
from digest.render.environment import RenderedEmail
from digest.render.mail import issue_batch, recipient
from digest.transports.base import Batch, Recipient, fill
from storage.records import ComparisonRecord, MindChange, ReviewRecord, ToolRecord, VerdictChangeRecord

SEATS = ("Builder", "Skeptic", "Futurist", "Founder")
WEEK, ISSUE_DATE = "2026-W48", date(2026, 11, 26)
DEMO_COMPARISONS = Path(__file__).resolve().parent.parent / "digest" / "demo" / "data" / "comparisons.json"
SECRET = "x" * 32


# -- comparisons ----------------------------------------------------------------------------------------------

def make_comparison(index: int = 0, *, title: str | None = None, tools: int = 2, url: str | None = None,
                    scores=(85, 78, 82, 55), verdicts=("ship", "ship", "ship", "skip")) -> ComparisonRecord:
    return ComparisonRecord(
        id=None,
        slug=f"tool-a-{index}-vs-tool-b-{index}",
        title=title or f"Tool A{index} vs Tool B{index}",
        url=url or f"https://verdicts.example.com/compare/tool-a-{index}-vs-tool-b-{index}",
        category="Developer Tools",
        published_at=datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc),
        tools=tuple(
            ToolRecord(position=position, name=f"Tool {'ABCD'[position]}{index}",
                       tagline=f"Tagline of tool {position}", entry_price="$20/mo", panel_ship_pct=75,
                       reviews=tuple(
                           ReviewRecord(position=seat, persona=SEATS[seat], score=scores[seat],
                                        verdict=verdicts[seat],
                                        text=f"{SEATS[seat]} take on tool {position}. A second sentence that is not quoted.")
                           for seat in range(4)))
            for position in range(tools)),
    )


def with_tools(comparison: ComparisonRecord, **changes) -> ComparisonRecord:
    """``comparison`` with ``changes`` made to every tool (records are frozen: a changed copy)."""
    return replace(comparison, tools=tuple(replace(tool, **changes) for tool in comparison.tools))


def with_tool(comparison: ComparisonRecord, position: int, **changes) -> ComparisonRecord:
    """``comparison`` with ``changes`` made to its tool at ``position``."""
    tools = list(comparison.tools)
    tools[position] = replace(tools[position], **changes)
    return replace(comparison, tools=tuple(tools))


def with_review(comparison: ComparisonRecord, position: int, seat: int, **changes) -> ComparisonRecord:
    """``comparison`` with ``changes`` made to review ``seat`` of its tool at ``position``."""
    reviews = list(comparison.tools[position].reviews)
    reviews[seat] = replace(reviews[seat], **changes)
    return with_tool(comparison, position, reviews=tuple(reviews))


def words(length: int, seed: str = "Verdict") -> str:
    text = f"{seed} lorem ipsum dolor sit amet, consectetur adipiscing elit & sed do eiusmod tempor. "
    return (text * (length // len(text) + 1))[:length]


def long_comparison(index: int, *, tools: int) -> ComparisonRecord:
    """Every text at the import schema's maximum length (contracts/comparison.schema.json)."""
    return ComparisonRecord(
        id=None, slug=f"long-{index}", title=words(300, f"T{index}"), category=words(100, "Cat"),
        url=f"https://verdicts.example.com/compare/long-{index}",
        published_at=datetime(2026, 11, 23, tzinfo=timezone.utc),
        tools=tuple(
            ToolRecord(position=position, name=words(200, f"Tool{position}"), tagline=words(500),
                       summary=words(5000), pricing=words(500), entry_price=words(50), panel_ship_pct=100,
                       reviews=tuple(ReviewRecord(position=seat, persona=words(50, "Persona"), score=100,
                                                  verdict="ship", text=words(10000)) for seat in range(4)))
            for position in range(tools)),
    )


def demo_comparisons(count: int) -> list[ComparisonRecord]:
    """The first ``count`` comparisons of the demo data (real-looking names and reviews), as loaded records."""
    return [_from_item(item) for item in load_comparisons(DEMO_COMPARISONS)[:count]]


def _from_item(item: dict) -> ComparisonRecord:
    columns = {name: item.get(name, default) for name, default in COMPARISON_FIELDS.items()}
    columns["published_at"] = parse_published_at(item["published_at"])
    return ComparisonRecord(
        id=None, slug=item["slug"], **columns,
        tools=tuple(
            ToolRecord(position=position, **{name: tool.get(name, default) for name, default in TOOL_FIELDS.items()},
                       reviews=tuple(ReviewRecord(position=seat, **{name: review[name] for name in REVIEW_FIELDS})
                                     for seat, review in enumerate(tool["reviews"])))
            for position, tool in enumerate(item["tools"])),
    )


# -- verdicts that changed (issue 16, item 3) ------------------------------------------------------------------

_CHANGE_IDS = count(1)


def changed_verdict(comparison_id: int = 1, *, tool: str = "Cellmind", title: str = "Cellmind vs Quillbot",
                    url: str | None = None, before: tuple[int, int] = (3, 1), after: tuple[int, int] = (1, 3),
                    pct: tuple[int | None, int | None] = (75, 25), week: str = "2026-W44",
                    minds: tuple[MindChange, ...] = (MindChange("Skeptic", "ship", "skip"),
                                                     MindChange("Builder", "ship", "skip"))) -> VerdictChangeRecord:
    """One tool's changed panel, as the store hands it to the render stage: by default 3/1 ship -> 1/3 skip."""
    return VerdictChangeRecord(
        id=next(_CHANGE_IDS), comparison_id=comparison_id, slug=f"changed-{comparison_id}", title=title,
        url=url or f"https://verdicts.example.com/compare/changed-{comparison_id}", tool=tool,
        before_ship=before[0], before_skip=before[1], after_ship=after[0], after_skip=after[1],
        before_pct=pct[0], after_pct=pct[1], original_week=week, minds=minds)


def typical_changes() -> tuple[VerdictChangeRecord, ...]:
    """Two comparisons: both tools of the first changed (one flipped by two seats, one by a seat that joined
    and one that left), one tool of the second (its ship % moved, its majority did not)."""
    return (
        changed_verdict(1),
        changed_verdict(1, tool="Quillbot", before=(2, 2), after=(3, 1), pct=(50, 75),
                        minds=(MindChange("Founder", None, "ship"), MindChange("Futurist", "skip", None))),
        changed_verdict(2, tool="Flowdesk", title="Flowdesk vs Taskweaver", before=(4, 0), after=(3, 1),
                        pct=(90, 60), week="2026-W45", minds=(MindChange("Skeptic", "ship", "skip"),)),
    )


def maximal_changes(comparisons: int, *, tools: int = 4) -> tuple[VerdictChangeRecord, ...]:
    """``comparisons`` comparisons, each with ``tools`` tools changed (all four, by default) and all four seats
    changing their mind, every text at the import schema's maximum length (title 300, tool name 200,
    persona 50)."""
    seats = tuple(MindChange(words(50, f"Persona{seat}"), "ship", "skip") for seat in range(4))
    return tuple(
        changed_verdict(index + 1, tool=words(200, f"Tool{position}"), title=words(300, f"T{index}"),
                        url=f"https://verdicts.example.com/compare/long-{index}", before=(4, 0), after=(0, 4),
                        pct=(100, 0), minds=seats)
        for index in range(comparisons) for position in range(tools))


# -- issues ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleIssue:
    name: str
    comparisons: list[ComparisonRecord]
    more_count: int = 0
    audience: str = "all categories"
    changes: tuple[VerdictChangeRecord, ...] = ()
    tool_names: list[list[str]] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "tool_names", [[tool.name for tool in c.tools] for c in self.comparisons])


def typical_issue() -> SampleIssue:
    """Three comparisons of two tools from the demo data, and two more this reader does not see."""
    return SampleIssue("typical", demo_comparisons(3), more_count=2)


def three_and_four_tools_issue() -> SampleIssue:
    return SampleIssue("3-and-4-tools", [make_comparison(0, tools=3), make_comparison(1, tools=4)])


def changes_issue() -> SampleIssue:
    """The typical issue for readers of two earlier issues whose verdicts changed since (issue 16, item 3)."""
    return replace(typical_issue(), name="changes", changes=typical_changes())


def maximal_issue(tools: int) -> SampleIssue:
    """Ten comparisons, every text at the schema's maximum length (the 90 KB budget's worst case)."""
    return SampleIssue(f"maximal-{tools}-tools", [long_comparison(i, tools=tools) for i in range(10)], more_count=5,
                       audience="Developer Tools and Writing")


def maximal_changes_issue() -> SampleIssue:
    """Ten maximal four-tool comparisons and the changes section's worst case (digest.render.changes): three
    comparisons of two changed tools each, and two more behind the "more" link."""
    return replace(maximal_issue(4), name="maximal-changes", changes=maximal_changes(5, tools=2))


# -- rendering, as one recipient gets it ----------------------------------------------------------------------

def sample_settings() -> Settings:
    return Settings(secret_key=SECRET, base_url="https://news.example.com")


def sample_renderer(settings: Settings | None = None) -> Renderer:
    settings = settings or sample_settings()
    return Renderer(settings=settings, links=Links(base_url=settings.base_url, signer=Signer(SECRET)))


def render_issue(issue: SampleIssue, renderer: Renderer | None = None) -> RenderedEmail:
    renderer = renderer or sample_renderer()
    return renderer.render_segment(week=WEEK, issue_date=ISSUE_DATE, comparisons=issue.comparisons,
                                   more_count=issue.more_count, audience=issue.audience,
                                   changes=issue.changes)


def sample_recipient(renderer: Renderer, *, email: str = "ada.reader@example.org", name: str = "Ada") -> Recipient:
    """A subscriber's substitutions and List-Unsubscribe headers, built the way the sender builds them."""
    token = renderer.links.signer.recipient_token(subscriber_id=7, delivery_id=42, tag=281474976710655)
    return recipient(42, email, name, token, renderer.links, renderer.settings)


def filled_html(issue: SampleIssue) -> str:
    """The HTML part exactly as one subscriber receives it."""
    renderer = sample_renderer()
    return fill(render_issue(issue, renderer).html, sample_recipient(renderer).substitutions)


def sample_batch(issue: SampleIssue) -> Batch:
    """One recipient's batch with the list headers and tags the sender puts on every batch (`issue_batch`)."""
    renderer = sample_renderer()
    return issue_batch(settings=renderer.settings, week=WEEK, segment_id=1, email=render_issue(issue, renderer),
                       recipients=[sample_recipient(renderer)])
