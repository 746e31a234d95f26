"""The docs cover the API: every public name is on an API page, documented, with an example.

Also runs the ``>>>`` blocks of the docs pages as doctests, checks the snippet includes and
the gallery's specs. The site itself is built by ``mkdocs build --strict`` in CI.
"""

import doctest
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import pytest

import attnblocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLIC = [n for n in attnblocks.__all__ if not n.startswith("__")]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


api_index = _load("api_index")


def test_every_public_name_is_on_an_api_page():
    documented = api_index.documented()
    missing = sorted(set(PUBLIC) - set(documented))
    assert not missing, f"not on any docs/api/*.md page (add '::: module' or the name): {missing}"


def test_api_index_lists_every_public_name():
    table = api_index.render_table()
    for name in PUBLIC:
        assert f"[`{name}`]" in table


@pytest.mark.parametrize("name", [n for n in PUBLIC if callable(getattr(attnblocks, n))])
def test_public_name_has_a_docstring_with_a_runnable_example(name):
    obj = getattr(attnblocks, name)
    doc = obj.__doc__ or ""  # not inspect.getdoc: no docstring inherited from a base class
    assert doc.strip(), f"attnblocks.{name} has no docstring"
    assert ">>>" in doc, f"attnblocks.{name}'s docstring has no runnable >>> example"


def _documented_modules():
    for page in sorted((DOCS / "api").glob("*.md")):
        for ident in api_index.DIRECTIVE.findall(page.read_text()):
            target = api_index._resolve(ident)
            if inspect.ismodule(target):
                yield target


def test_every_documented_module_member_has_a_docstring():
    bare = []
    for module in _documented_modules():
        for n in getattr(module, "__all__", []):
            obj = getattr(module, n)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (
                obj.__doc__ or ""
            ).strip():
                bare.append(f"{module.__name__}.{n}")
    assert not bare, f"public without a docstring: {bare}"


PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```pycon\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_examples_run(page):
    """The ``pycon`` blocks of a page, in order, sharing one namespace, as doctests."""
    text = page.read_text()
    parser, globs = doctest.DocTestParser(), {}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for m in FENCE.finditer(text):
        lineno = text[: m.start()].count("\n") + 1
        test = parser.get_doctest(m.group(1), globs, page.name, str(page), lineno)
        runner.run(test, clear_globs=False)
        globs = test.globs  # get_doctest copies the namespace: carry it to the next block
    assert runner.failures == 0, f"{runner.failures} doctest failures in {page} (see output)"


SNIPPET = re.compile(r'--8<-- "([^":]+)(?::(\w+))?"')


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_snippets_exist(page):
    text = page.read_text()
    for line in text.splitlines():  # a formatter that rewrites the marker hides the include
        if "--8" in line:
            assert SNIPPET.search(line), f"{page.name}: not a snippet line: {line!r}"
    for path, section in SNIPPET.findall(text):
        source = (ROOT / path).read_text()
        if section:
            assert f"--8<-- [start:{section}]" in source, f"{path} has no section {section}"
            assert f"--8<-- [end:{section}]" in source, f"{path} has no end of {section}"


def test_gallery_code_is_the_drawn_spec():
    gallery = _load("gen_gallery")
    names = [e.name for e in gallery.GALLERY]
    assert len(set(names)) == len(names)
    namespace = {n: getattr(attnblocks, n) for n in PUBLIC} | {"zoo": attnblocks.zoo}
    for e in gallery.GALLERY:
        assert eval(e.code, namespace) == e.spec, e.name
    page = gallery.on_page_markdown((DOCS / "gallery.md").read_text(), None, None, None)
    assert all(f"gallery/{n}.png" in page for n in names)
