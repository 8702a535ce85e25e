"""The Chinese layer (README.zh-CN.md, each notebook's 中文导读 and 本节小结) stays in step with the course."""

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
# a notebook's numbered section ("## 4. Dynamic batching") and a Chinese citation of it
SECTION = re.compile(r"^## (\d+)\.", flags=re.M)
CITED = re.compile(r"第\s*(\d+(?:\s*[、,，和至\-–]\s*\d+)*)\s*节")  # 第 4 节, 第 3、4 节, 第 4-6 节
# words the 术语表 replaced: 延迟 (时延), 笔记本 (a laptop, not a notebook), the old odd entries, calques
NOT_OUR_WORDS = ("延迟", "笔记本", "限流器", "替身", "负载削减", "形状配置", "旋钮", "活得更久")


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


def cells_of(notebook) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def chinese_cells(notebook) -> tuple[str, str]:
    """A notebook's 中文导读 (the cell under its title) and 本节小结 (its last cell)."""
    cells = cells_of(notebook)
    return "".join(cells[1]["source"]), "".join(cells[-1]["source"])


def glossary_terms() -> list[str]:
    """The Chinese column of README.zh-CN.md's 术语表, entries like "吞吐/时延" split into their parts."""
    section = (
        README_ZH.read_text(encoding="utf-8").split("\n## 术语表\n", 1)[1].split("\n## ", 1)[0]
    )
    rows = [line.split("|") for line in section.splitlines() if line.startswith("|")]
    chinese = [row[2].strip() for row in rows[2:]]  # after the header and the |---| line
    return [part.strip() for entry in chinese for part in entry.split("/") if part.strip()]


def cited_sections(text: str) -> set[int]:
    """Every section number a Chinese text cites as 第 N 节 (ranges such as 第 4-6 节 included)."""
    cited = set()
    for group in CITED.findall(text):
        for part in re.split(r"\s*[、,，和]\s*", group):
            ends = [int(n) for n in re.split(r"\s*[至\-–]\s*", part)]
            cited.update(range(ends[0], ends[-1] + 1))
    return cited


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_every_chinese_guide_states_three_to_five_conclusions_and_how_to_read_the_output(notebook):
    guide, _ = chinese_cells(notebook)
    conclusions = guide.split("**关键结论**", 1)[1].split("\n**", 1)[0]
    items = [line for line in conclusions.splitlines() if line.startswith("- ")]
    assert 3 <= len(items) <= 5, f"{notebook.name}: {len(items)} conclusions"
    assert "**怎么读输出**" in guide


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_every_notebook_ends_with_a_chinese_summary(notebook):
    cells = cells_of(notebook)
    summary = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "markdown" and summary.startswith("## 本节小结"), notebook.name
    assert "**下一" in summary  # the Next line of "What you have now", in Chinese
    assert "```bash" not in summary


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_every_section_the_chinese_cells_cite_exists(notebook):
    sources = ["".join(c["source"]) for c in cells_of(notebook) if c["cell_type"] == "markdown"]
    sections = {int(n) for source in sources for n in SECTION.findall(source)}
    for name, text in zip(("中文导读", "本节小结"), chinese_cells(notebook)):
        missing = sorted(cited_sections(text) - sections)
        assert not missing, (
            f"{notebook.name}'s {name} cites 第 {missing} 节; its sections are {sorted(sections)}"
        )


def test_the_section_citations_are_all_read():
    assert cited_sections("第 3 节，第 3、4 节，第 4-6 节，第 1 和 7 节") == {1, 3, 4, 5, 6, 7}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_the_chinese_cells_keep_to_the_glossarys_words(notebook):
    for name, text in zip(("中文导读", "本节小结"), chinese_cells(notebook)):
        used = [word for word in NOT_OUR_WORDS if word in text]
        assert not used, f"{notebook.name}'s {name} says {used}: use the 术语表's word"
        assert '"' not in re.sub(r"`[^`]*`", "", text), (
            f"{notebook.name}'s {name}: quote with “” outside code"
        )


def test_every_glossary_term_is_used_in_the_chinese_text():
    terms = glossary_terms()
    # the table was found and its entries split
    assert len(terms) > 40 and "时延" in terms and "过载保护" in terms
    readme = README_ZH.read_text(encoding="utf-8")
    glossary = readme.split("\n## 术语表\n", 1)[1]
    chinese = readme.replace(glossary, "") + "".join(
        guide + summary for guide, summary in map(chinese_cells, NOTEBOOKS)
    )
    unused = [term for term in terms if term not in chinese]
    assert not unused, f"术语表 terms no Chinese text uses (outside the 术语表 itself): {unused}"


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
