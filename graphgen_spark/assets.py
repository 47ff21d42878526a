"""Offline assets that the code needs at run time, installed from package registries only.

The ``cl100k_base`` token ranks are not fetched from the internet at run time (tiktoken
would do that silently). ``make setup`` takes the file from a pinned PyPI wheel that ships
it, checks it against tiktoken's published SHA-256 and stores it as package data.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
CL100K_FILE = DATA_DIR / "cl100k_base.tiktoken"
# tiktoken_ext.openai_public pins this hash for cl100k_base.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# A PyPI wheel that carries the ranks file (under tiktoken's cache-key name).
CL100K_WHEEL = "litellm==1.110.2"
CL100K_MEMBER = "litellm/litellm_core_utils/tokenizers/9b5ad71b2ce5302211f9c61530b329a4922fc6a4"


class AssetError(RuntimeError):
    """A run-time asset is missing or corrupt; the message says how to install it."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cl100k_path() -> Path:
    """Path of the verified ranks file, or a clear error naming the fix."""
    if not CL100K_FILE.exists():
        raise AssetError(
            f"tokenizer ranks for cl100k_base are missing ({CL100K_FILE}); run `make setup` "
            "(or `graphgen-spark setup`) to install them from PyPI"
        )
    return CL100K_FILE


def install_cl100k() -> Path:
    """Extract the ranks from the pinned wheel (no dependencies installed) and verify them."""
    if CL100K_FILE.exists() and _sha256(CL100K_FILE) == CL100K_SHA256:
        return CL100K_FILE
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, CL100K_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise AssetError(
                f"could not download {CL100K_WHEEL} from PyPI to obtain the cl100k_base ranks: "
                f"{proc.stderr.strip()[-500:]}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(CL100K_MEMBER)
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise AssetError(f"cl100k_base ranks from {CL100K_WHEEL} fail the SHA-256 check")
    tmp_file = CL100K_FILE.with_suffix(".part")
    tmp_file.write_bytes(data)
    tmp_file.replace(CL100K_FILE)
    return CL100K_FILE
