"""Which API page documents each public name; the table of ``docs/api/index.md``.

An API page documents a whole module with a ``::: attnblocks.module`` line (so a name added
to the module's ``__all__`` appears there without editing the page) or one object with
``::: attnblocks.Name``. Used as an mkdocs hook (it renders the ``<!-- api-index -->``
marker) and by ``tests/test_docs.py``, which checks that every name of ``attnblocks.__all__``
is documented somewhere.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document the checkout these docs belong to

import attnblocks  # noqa: E402

MARKER = "<!-- api-index -->"
DIRECTIVE = re.compile(r"^::: *([\w.]+)", re.MULTILINE)


def _resolve(identifier: str):
    """The module or object an identifier such as ``attnblocks.partition.Window`` names."""
    parts = identifier.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(identifier)


def documented() -> dict[str, tuple[str, str]]:
    """``{public name: (page path relative to docs/, identifier)}`` for every documented name."""
    public = {n: getattr(attnblocks, n) for n in attnblocks.__all__ if not n.startswith("__")}
    found: dict[str, tuple[str, str]] = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        rel = page.relative_to(DOCS).as_posix()
        for identifier in DIRECTIVE.findall(page.read_text()):
            target = _resolve(identifier)
            if inspect.ismodule(target):
                names = getattr(target, "__all__", [])
                hits = {n: f"{target.__name__}.{n}" for n in names if n in public}
                hits = {n: i for n, i in hits.items() if getattr(target, n) is public[n]}
            else:
                hits = {n: identifier for n, obj in public.items() if obj is target}
            for n, ident in hits.items():
                found.setdefault(n, (rel, ident))
    return found


ROLE = re.compile(r":\w+:`~?(?:[\w]+\.)*(\w+)`")


def _summary(obj) -> str:
    """The docstring's first paragraph, on one line, Sphinx roles as plain code."""
    doc = (inspect.getdoc(obj) or "").split("\n\n")[0]
    return ROLE.sub(r"`\1`", doc).replace("\n", " ").replace("|", "\\|")


def render_table(page_path: str = "api/index.md") -> str:
    """A table of every name in ``attnblocks.__all__``: kind, page and summary."""
    found = documented()
    rows = ["| name | kind | summary |", "| --- | --- | --- |"]
    base = Path(page_path).parent
    for name in sorted(found, key=str.lower):
        obj = getattr(attnblocks, name)
        kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "constant"
        rel, ident = found[name]
        link = Path(rel).relative_to(base).as_posix() if rel.startswith("api/") else rel
        rows.append(f"| [`{name}`]({link}#{ident}) | {kind} | {_summary(obj)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render_table(page.file.src_uri))
