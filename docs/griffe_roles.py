"""Griffe extension: render the Sphinx roles of attnblocks docstrings as API links.

Docstrings say ``:class:`~attnblocks.Attention``` (readable in ``help()``); in the docs each
role becomes a link to the documented object, or plain code where the target is not
documented (an optional autoref never fails a strict build). Doctest blocks (a line starting
with ``>>>`` up to the next blank line) become fenced ``pycon`` code, so that their output is
shown as code rather than read as Markdown (``['a', 'b']`` would be a reference link).
"""

from __future__ import annotations

import functools
import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([\w.]+)`")


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                link = functools.partial(_link, obj, loader)
                obj.docstring.value = fence_doctests(ROLE.sub(link, obj.docstring.value))


def fence_doctests(text: str) -> str:
    """Wrap each doctest block of ``text`` in a ``pycon`` fence at the block's indentation."""
    out: list[str] = []
    indent: str | None = None
    for line in text.splitlines():
        if indent is None and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
        elif indent is not None and not line.strip():
            out.append(f"{indent}```")
            indent = None
        out.append(line)
    if indent is not None:
        out.append(f"{indent}```")
    return "\n".join(out)


def _walk(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _link(obj, loader: griffe.GriffeLoader, m: re.Match) -> str:
    short, name = m.group(1), m.group(2)
    title = name.rsplit(".", 1)[-1] if short else name
    try:
        target = loader.modules_collection[name] if "." in name else None
        path = target.final_target.path if target is not None and target.is_alias else name
        if target is None:
            path = obj.resolve(name)
    except Exception:  # unknown name: plain code, as a reader would see it anyway
        return f"`{title}`"
    return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'
