"""What makes a model version reproducible: the code's git commit and the installed package set."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata

from price_platform.settings import PACKAGE_DIR


def git_commit() -> str:
    """Commit of the working tree the code runs from, ``unknown`` outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def package_set_hash() -> str:
    """SHA-256 of the sorted ``name==version`` list of every installed distribution."""
    pins = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]})
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()
