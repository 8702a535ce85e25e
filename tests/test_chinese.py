"""The Chinese guide (README.zh-CN.md and each notebook's 中文导读) stays in step with the course."""

from __future__ import annotations

import json
import re

import pytest

from helpers.paths import REPO_ROOT
from tools.run_course import course_notebooks

README = REPO_ROOT / "README.md"
README_ZH = REPO_ROOT / "README.zh-CN.md"
NOTEBOOKS = course_notebooks()
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def bash_blocks(text: str) -> list[str]:
    """The ```bash fenced blocks of a markdown text, in order."""
    return re.findall(r"^```bash\n(.*?)^```$", text, flags=re.M | re.S)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_every_notebook_has_a_chinese_guide_right_under_its_title(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    guide = "".join(cells[1]["source"])
    assert cells[1]["cell_type"] == "markdown" and guide.startswith("## 中文导读"), notebook.name
    assert "本节目标" in guide and "关键结论" in guide
    assert "```bash" not in guide  # commands live in the blocks the tests check against builders


def test_the_two_readmes_link_to_each_other_and_every_local_link_resolves():
    english, chinese = README.read_text(encoding="utf-8"), README_ZH.read_text(encoding="utf-8")
    assert "(README.zh-CN.md)" in english.split("\n## ")[0]  # at the top
    assert "(README.md)" in chinese.splitlines()[0]
    for text, name in ((english, "README.md"), (chinese, "README.zh-CN.md")):
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (REPO_ROOT / target.split("#")[0]).resolve()
            assert path.exists(), f"{name} links to {target}, which does not exist"


def test_the_chinese_readme_has_the_english_readmes_command_blocks_verbatim():
    english = bash_blocks(README.read_text(encoding="utf-8"))
    chinese = bash_blocks(README_ZH.read_text(encoding="utf-8"))
    assert english, "README.md has no command block"
    assert sorted(chinese) == sorted(english)
