"""Print the preset table (params, MACs) and optionally write it into README.md.

    python benchmarks/preset_table.py                 # print
    python benchmarks/preset_table.py --update-readme # rewrite the README section between markers
"""

import argparse
from pathlib import Path

from hersr_arch.bench.model_cost import preset_table

START, END = "<!-- preset-table:start -->", "<!-- preset-table:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def replace_section(text: str, table: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table}{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    table = preset_table()
    print(table, end="")
    if args.update_readme:
        README.write_text(replace_section(README.read_text(), table))


if __name__ == "__main__":
    main()
