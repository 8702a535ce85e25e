"""Where things live in the course checkout (defined for every notebook; see notebook 00)."""

from __future__ import annotations

from pathlib import Path

#: The checkout's root folder (this package is installed editable from it).
REPO_ROOT: Path = Path(__file__).resolve().parent.parent
#: The one Triton model repository every notebook and the NGC container serve.
MODEL_REPOSITORY: Path = REPO_ROOT / "model_repository"
#: Executed notebooks, HTML, CSV results and screenshots (git-ignored).
BUILD_DIR: Path = REPO_ROOT / "build"
#: Small files committed with the course (speech samples, reference results).
DATA_DIR: Path = REPO_ROOT / "data"


def build_dir(*parts: str) -> Path:
    """Return a folder under ``build/`` (created if missing), e.g. ``build_dir("results")``."""
    path = BUILD_DIR.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
