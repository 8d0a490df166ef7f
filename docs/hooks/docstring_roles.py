"""mkdocs hook: the API pages render the docstrings' Sphinx roles (``:func:`fit```, shown as
":func:" before the name's code) as the name's code alone, with its ``~`` short form read as
Sphinx reads it (the last dotted part)."""

import re

_ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|exc|obj):<code>~?([^<]*)</code>")


def _shown(match: re.Match) -> str:
    name = match.group(1)
    whole = match.group(0)
    short = name.rsplit(".", 1)[-1] if ":<code>~" in whole else name
    return f"<code>{short}</code>"


def on_page_content(html: str, **kwargs) -> str:
    """The page's HTML with every rendered role reduced to its code span."""
    return _ROLE.sub(_shown, html)
