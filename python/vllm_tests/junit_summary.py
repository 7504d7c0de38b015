"""Per-test results of a pytest ``--junitxml`` file, one line each, and the counts.

    python junit_summary.py RESULTS.xml [OUT.txt]

Lines are ``PASSED|FAILED|ERROR|SKIPPED  tests/path.py::test_name[params]``, a failure
or error followed by `` -- `` and the first line of its message (the assertion or
exception). The last line is ``N passed, N failed`` (and errors, skipped if any).
Written to OUT.txt if given, else printed; with OUT.txt, only the counts and the
failures are printed.
"""

import sys
import xml.etree.ElementTree as ET


def node_id(case: ET.Element) -> str:
    classname = case.get("classname", "")
    file = case.get("file") or classname.replace(".", "/") + ".py"
    return f"{file}::{case.get('name')}"


def one_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if "validation error for" in first and len(lines) > 1:  # pydantic: the why is next
        first = f"{first}: {lines[1]}"
    return first[:300]


def summarize(path: str) -> tuple[list[str], list[str], str]:
    lines, problems = [], []
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, reason = "PASSED", ""
        for child in case:
            if child.tag == "failure":
                outcome, reason = "FAILED", one_line(child.get("message") or child.text)
            elif child.tag == "error" and outcome == "PASSED":
                outcome, reason = "ERROR", one_line(child.get("message") or child.text)
            elif child.tag == "skipped" and outcome == "PASSED":
                outcome, reason = "SKIPPED", one_line(child.get("message"))
        counts[{"PASSED": "passed", "FAILED": "failed", "ERROR": "errors",
                "SKIPPED": "skipped"}[outcome]] += 1
        line = f"{outcome:8} {node_id(case)}" + (f" -- {reason}" if reason else "")
        lines.append(line)
        if outcome in ("FAILED", "ERROR"):
            problems.append(line)
    total = f"{counts['passed']} passed, {counts['failed']} failed"
    total += "".join(f", {counts[k]} {k}" for k in ("errors", "skipped") if counts[k])
    return lines, problems, total


def main() -> None:
    lines, problems, total = summarize(sys.argv[1])
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as out:
            out.write("\n".join(lines + [total]) + "\n")
        for line in problems:
            print(line)
        print(total)
    else:
        print("\n".join(lines + [total]))


if __name__ == "__main__":
    main()
