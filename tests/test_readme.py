"""The README's two set-up commands are the ones CI and users run."""

from __future__ import annotations

import re

from conftest import REPO

README = (REPO / "README.md").read_text()


def fenced_commands() -> list[str]:
    return [line.strip() for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", README, re.S)
            for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    ci_command = ci_lines[-1].strip()
    assert "pytest" in ci_command
    assert ci_command in fenced_commands(), f"README must show the CI test command: {ci_command}"


def test_readme_main_command_runs_the_demo_on_a_bundled_sample():
    demo = [c for c in fenced_commands() if "vaecodec demo" in c]
    assert demo, "README needs the one-command install-and-demo line"
    sample = demo[0].split("vaecodec demo")[1].split()[0]
    assert (REPO / sample).is_file()


def test_readme_results_table_is_the_benchmarks():
    import json

    from benchmarks import readme_table

    results = json.loads((REPO / "benchmarks" / "results" / "kodak" / "results.json").read_text())
    table = readme_table.render(results)
    assert table in README, "regenerate it: python -m benchmarks.readme_table benchmarks/results/kodak"
