"""The documentation holds together: README.md is short and keeps CI's test command, every relative link in
README.md and docs/*.md points at a file that exists (no anchors, which break silently), and every environment
variable odl reads is documented in docs/environment.md. Reads files only: fast, no emulator."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))

# [text](target) and [text](target "title"); images too
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_BLOCK = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", CODE_BLOCK.sub("", page.read_text()))
    return LINK.findall(text)


def _relative(target: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("//")


def test_the_pages_exist():
    for name in ("README.md", "cli.md", "design.md", "memory.md", "validation.md", "training.md", "ops.md",
                 "performance.md", "robustness.md", "environment.md"):
        assert (DOCS / name).is_file(), name


def test_every_relative_link_resolves_to_a_file_without_anchor():
    bad = []
    n = 0
    for page in PAGES:
        for target in _links(page):
            if not _relative(target):
                continue
            n += 1
            if "#" in target:
                bad.append(f"{page.relative_to(ROOT)}: {target} (anchor)")
                continue
            dest = (page.parent / target).resolve()
            if not dest.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target} (missing)")
            elif ROOT not in dest.parents and dest != ROOT:
                bad.append(f"{page.relative_to(ROOT)}: {target} (outside the repository)")
    assert n > 10, "no links found: the link pattern is broken"
    assert not bad, "\n".join(bad)


def test_every_doc_page_is_linked_from_the_index():
    index = {Path(t).name for t in _links(DOCS / "README.md")}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in index]
    assert not missing, missing


def test_readme_is_short_and_keeps_the_test_command():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "python3 -m pytest -q" in text   # .ci/run runs exactly this
    assert "bash scripts/setup.sh && odl train tests/models/digits_cnn.py:DigitsCNN" in text
    assert "odl validate resnet8 --precision fp16" in text
    for cmd in ("validate", "compile", "profile", "tune", "train", "bench", "sweep", "fleet", "models"):
        assert f"`odl {cmd}" in text, cmd


def env_keys(source: str, filename: str = "<src>") -> set[str]:
    """Names a Python source reads from the environment: os.environ.get("X"), os.environ["X"], os.getenv("X"),
    os.environ.setdefault/pop("X"), "X" in os.environ."""
    keys = set()
    for node in ast.walk(ast.parse(source, filename)):
        key = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            if ast.unparse(node.func).endswith(("environ.get", "getenv", "environ.setdefault", "environ.pop")):
                key = node.args[0].value
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
            if isinstance(node.slice, ast.Constant):
                key = node.slice.value
        elif (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant)
              and any(ast.unparse(c).endswith("environ") for c in node.comparators)):
            key = node.left.value
        if isinstance(key, str):
            keys.add(key)
    return keys


def test_the_env_scan_finds_every_form():
    src = ('import os\nfrom os import environ\nos.environ.get("ODL_A")\nos.environ["ODL_B"]\n'
           'os.getenv("ODL_C", "")\n"ODL_D" in os.environ\nenviron.get("ODL_E", "1")\nos.environ.get(name)\n')
    assert env_keys(src) == {"ODL_A", "ODL_B", "ODL_C", "ODL_D", "ODL_E"}


def test_every_environment_variable_is_documented():
    reads = {}
    for f in sorted((ROOT / "odl").rglob("*.py")):
        for k in env_keys(f.read_text(), str(f)):
            reads.setdefault(k, str(f.relative_to(ROOT)))
    assert {"ODL_CC", "ODL_LDFLAGS", "ODL_NATIVE_CACHE"} <= set(reads), "the environment scan is broken"
    doc = (DOCS / "environment.md").read_text()
    missing = [f"{k} ({where})" for k, where in sorted(reads.items()) if f"`{k}`" not in doc]
    assert not missing, "not in docs/environment.md: " + ", ".join(missing)


def test_docs_name_no_design_document_outside_the_repository():
    for page in PAGES:
        text = page.read_text()
        assert "DESIGN.md" not in text and "../shared" not in text, page.name


def test_every_repository_path_the_docs_name_exists():
    """Paths such as odl/tile/tiler.py or targets/common/main.c named in the docs exist (a module moved or renamed
    makes its docs wrong). Placeholders (<target>) and the wheel's odl/_data are not files of the checkout."""
    path = re.compile(r"(?<![\w./~-])((?:odl|targets|kernels_c|templates|tests|scripts|bench|qemu_plugins)/[\w./-]*[\w/])")
    bad = []
    for page in PAGES:
        for m in path.finditer(page.read_text()):
            p = m.group(1)
            if "<" in page.read_text()[m.end():m.end() + 1] or p.startswith("odl/_data"):
                continue
            if not (ROOT / p).exists():
                bad.append(f"{page.relative_to(ROOT)}: {p}")
    assert not bad, "\n".join(bad)
