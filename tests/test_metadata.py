"""Package metadata: one version, quoted consistently."""

import re
from importlib.metadata import version
from pathlib import Path

import specbound

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_kept_in_one_place():
    cff = (ROOT / "CITATION.cff").read_text()
    match = re.search(r"^version:\s*(\S+)", cff, flags=re.MULTILINE)
    assert match is not None
    assert match.group(1) == specbound.__version__ == version("specbound")


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    fence = lines.index("```bash")
    main, tests = lines[fence + 1], lines[fence + 2]
    assert main.startswith("pip install") and "specbound audit" in main
    assert tests.startswith("pip install") and "pytest" in tests
