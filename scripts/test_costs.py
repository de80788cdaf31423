"""Write tests/test_costs.json from a pytest JUnit XML report.

The workers of ``scripts/test.sh`` take the costliest test groups first (see
``tests/conftest.py``); the costs come from a measured run:

    bash scripts/test.sh --junitxml=/tmp/junit.xml
    .venv/bin/python scripts/test_costs.py /tmp/junit.xml

Tests of 0.3 s or more are listed one by one, the rest as a per-module total.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "test_costs.json"
SINGLE = 0.3


def nodeid(classname: str, name: str) -> str:
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (REPO / path).is_file():
            return "::".join([path, *parts[cut:], name])
    raise ValueError(f"no test file for {classname}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="test_costs.py",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("report", type=Path, help="a JUnit XML report of a full pytest run")
    report = parser.parse_args(argv).report
    try:
        cases = list(ET.parse(report).iter("testcase"))
    except (OSError, ET.ParseError) as exc:
        print(f"test_costs.py: cannot read {report}: {exc}", file=sys.stderr)
        return 1
    if not cases:
        print(f"test_costs.py: {report} reports no tests", file=sys.stderr)
        return 1
    tests: dict[str, float] = {}
    modules: dict[str, float] = {}
    for case in cases:
        try:
            node = nodeid(case.get("classname", ""), case.get("name", ""))
        except ValueError as exc:
            print(f"test_costs.py: {exc} (a report of another checkout?)", file=sys.stderr)
            return 1
        seconds = float(case.get("time", "0"))
        if seconds >= SINGLE:
            tests[node] = round(seconds, 2)
        else:
            module = node.split("::", 1)[0]
            modules[module] = modules.get(module, 0.0) + seconds
    out = {
        "tests": dict(sorted(tests.items())),
        "modules": {k: round(v, 2) for k, v in sorted(modules.items())},
    }
    OUT.write_text(json.dumps(out, indent=0, sort_keys=False) + "\n")
    print(f"{OUT.relative_to(REPO)}: {len(tests)} tests, {len(modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
