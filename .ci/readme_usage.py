"""Run the README's "Usage" code block against the installed camegrad_jax, not the source tree.

Usage: python readme_usage.py README.md (from a directory outside the repository).
"""

import re
import sys
from pathlib import Path

readme = Path(sys.argv[1]).read_text()
section = readme.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
if len(blocks) != 1:
    sys.exit(f"expected one python block under '## Usage' in {sys.argv[1]}, found {len(blocks)}")

namespace: dict[str, object] = {}
exec(compile(blocks[0], f"{sys.argv[1]}:Usage", "exec"), namespace)

import camegrad_jax  # noqa: E402  (imported by the block; checked here)

location = Path(camegrad_jax.__file__).resolve()
if Path(sys.prefix).resolve() not in location.parents:
    sys.exit(f"camegrad_jax was imported from {location}, not from the venv at {sys.prefix}")
losses = namespace["losses"]
print(f"README usage ran with camegrad_jax from {location.parent}; losses = {losses}")
