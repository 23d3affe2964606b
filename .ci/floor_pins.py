"""Print ``name==floor`` for the packages named on the command line, from pyproject.toml's ``>=`` floors.

`make test-floor` installs these pins so the lowest versions the project declares are the ones tested.
Exits non-zero, naming the package, when one has no ``>=`` floor in [project].dependencies.
"""

import re
import sys
import tomllib
from pathlib import Path

dependencies = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
floors = {}
for spec in dependencies:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(,.*)?", spec)
    if match:
        floors[match.group(1).lower()] = match.group(2)
missing = [name for name in sys.argv[1:] if name.lower() not in floors]
if missing:
    sys.exit(f"pyproject.toml: no '>=' floor for {', '.join(missing)} in [project].dependencies")
print(" ".join(f"{name}=={floors[name.lower()]}" for name in sys.argv[1:]))
