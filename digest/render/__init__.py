"""Render: Jinja2 (autoescaped) → MJML → HTML, the text part and the subject of an email."""
