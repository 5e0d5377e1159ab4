"""The page templates (templates/web) as every page of ours is rendered: autoescaped, strict, whatever the name.

Apart from the web app so that `digest demo`, which writes a page of this kind into its folder, need not
import FastAPI to render it.
"""

from __future__ import annotations

import jinja2

from digest.render.environment import templates_dir


def web_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "web"),
        autoescape=True,  # every page template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
