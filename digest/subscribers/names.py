"""Which names may be stored. A subscriber's name is shown in the `To:` of every email and in its greeting,
so a name must not carry a link: "Support: verify at evil.example" would read as a message from us. Every
path that stores a name (signup, `digest subscribers add`, the CSV import) asks `link_in_name` first.

The rule: anything a mail client or a reader would take for a web or email address is refused —
a scheme (`https://`, `mailto:`), `www.`, an `@`, a dotted IPv4 address, or a host with a top-level domain
(a letter or digit, a dot, then two letters or more: `evil.com`, `bit.ly`, `x.xn--p1ai`). Initials pass
("J.R.R. Tolkien": one letter after each dot); "St.John" does not, and the message says to add a space.
Full-width and ideographic dots count as dots, and invisible characters are ignored.
"""

from __future__ import annotations

import re
import unicodedata

# One pattern for all: a new hole is a new alternative here, and every path gets it.
_LINK_LIKE = re.compile(
    r"""[a-z][a-z0-9+.\-]*:/+                              # a scheme with slashes: https://, ftp:/, ...
      | \b(?:mailto|javascript|data|tel|sms|file|callto):  # the schemes that need no slashes
      | \bwww\d*\.                                         # www., www2.
      | @                                                  # an email address, or a display name that looks like one
      | \d{1,3}(?:\.\d{1,3}){3}                            # a dotted IPv4 address
      | [^\W_]\.[^\W\d_]{2,}                               # host.tld: a letter or digit, a dot, 2+ letters
    """, re.IGNORECASE | re.VERBOSE)
# What may not stand in a header or a greeting: control characters, and look-alikes of a substitution tag.
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f]|\[%|%\]")
# What NFKC leaves alone but a reader or an IDNA-aware client still takes for a dot (U+3002, U+FF61).
_OTHER_DOTS = str.maketrans({"\u3002": ".", "\uff61": "."})


def link_in_name(name: str) -> str | None:
    """The part of ``name`` that looks like a web or email address, or None when the name may be stored."""
    visible = "".join(ch for ch in unicodedata.normalize("NFKC", name) if unicodedata.category(ch) != "Cf")
    text = visible.translate(_OTHER_DOTS)
    found = _LINK_LIKE.search(text)
    if found is None:
        return None
    start = text.rfind(" ", 0, found.start()) + 1  # the whole word it sits in: "evil.com", not "l.com"
    end = text.find(" ", found.end())
    return text[start:end if end >= 0 else len(text)][:60]


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` for a person to read, or None. One sentence, no field or line prefix."""
    part = link_in_name(name)
    if part is None:
        return None
    return (f"a name cannot contain a web or email address (found {part!r}): write just the name, "
            "with a space after any dot (\"St. John\")")


def clean_name(name: str) -> str:
    """A subscriber's name as it may appear in a header or a greeting: one line, no tag look-alikes."""
    if name and name.isprintable() and len(name) <= 100 and name == name.strip() and "  " not in name \
            and "[%" not in name and "%]" not in name:
        # Already clean (nearly every name), so the regex below would change nothing: skipped, since it
        # runs once per recipient. isprintable() is False for every control character the regex removes.
        return name
    return " ".join(_UNSAFE_NAME.sub(" ", name or "").split())[:100]
