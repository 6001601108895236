"""The README's preset table is the one the script produces today."""

import importlib.util
from pathlib import Path

from hersr_arch.bench.model_cost import preset_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_preset_table_is_current():
    spec = importlib.util.spec_from_file_location("preset_table", ROOT / "benchmarks" / "preset_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (ROOT / "README.md").read_text()
    assert script.START in readme and script.END in readme
    assert script.replace_section(readme, preset_table()) == readme, (
        "README preset table is stale: run `python benchmarks/preset_table.py --update-readme`"
    )


def test_readme_first_section_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first = readme.split("\n## ")[1]
    assert "make demo" in first and "make test" in first
