"""The guide's three examples are in examples/ verbatim (below their comment header).

The guide lives outside this repository (spec/python-sdk-guide.txt next to it); where it
is absent the comparison is skipped, and the run of each example (test_examples.py) still
shows they work unmodified.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1]
GUIDE_CANDIDATES = [
    Path(os.environ.get("AETHER_SDK_GUIDE", "/nonexistent")),
    EXAMPLES.parents[1] / "shared" / "spec" / "python-sdk-guide.txt",
]

# (file, first line of the guide's block, heading after the block)
BLOCKS = [
    ("quickstart.py", "import asyncio", "Register, Start, Stop"),
    ("code_reviewer.py", "import asyncio", "Example: Custom Data Processor"),
    ("data_processor.py", "import asyncio", "Error Handling"),
]
# Where each block starts in the guide: after this heading.
HEADINGS = {
    "quickstart.py": "Create Your Agent",
    "code_reviewer.py": "Example: Code Reviewer Agent",
    "data_processor.py": "Example: Custom Data Processor",
}


def _guide() -> str:
    for candidate in GUIDE_CANDIDATES:
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    pytest.skip("the SDK guide (spec/python-sdk-guide.txt) is not available here")


def _guide_block(guide: str, heading: str, first_line: str, next_heading: str) -> str:
    after = guide.split(f"\n{heading}\n", 1)[1]
    start = after.index(f"\npython\n{first_line}\n") + len("\npython\n")
    block = after[start:]
    block = block[: block.index(f"\n{next_heading}\n")]
    return block.strip("\n") + "\n"


def _example_code(name: str) -> str:
    lines = (EXAMPLES / name).read_text(encoding="utf-8").splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)  # the header comment block
    return "".join(lines)


@pytest.mark.parametrize(("name", "first_line", "next_heading"), BLOCKS)
def test_example_is_the_guides_code(name: str, first_line: str, next_heading: str) -> None:
    guide = _guide()
    expected = _guide_block(guide, HEADINGS[name], first_line, next_heading)
    assert _example_code(name) == expected
