"""The parameter tables of ``docs/kernels.md``, generated from :data:`ckernel.params.SPECS`.

``python -m ckernel.params_doc docs/kernels.md`` rewrites the part of the file between the
two markers below; ``--check`` only says whether it is current (exit status 1 if not), as
``tests/kernels/test_docs_tables.py`` does. Without a file it prints the tables.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from ckernel.params import KINDS, RULES, SAMPLES_RULE, SPECS
from simkind.fields import parameter_rows

BEGIN = ("<!-- generated from ckernel/params.py by `python -m ckernel.params_doc "
         "docs/kernels.md`: edit the specs, not this -->")
END = "<!-- end of the generated parameter tables -->"
WIDTH = 92
"""Prose lines are wrapped like the rest of the file; table rows stay whole."""


def table(kind: str) -> str:
    """The Markdown table of one kind's parameters, in spec order."""
    rows = ["| parameter | default | allowed | unit | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{r['name']}` | {r['default']} | {r['allowed']} | {r['unit']} | {r['doc']} |"
             for r in parameter_rows(SPECS[kind])]
    return "\n".join(rows)


def _prose(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def markdown() -> str:
    """Every kind's heading, table and rules, then the sampling rule (between the markers)."""
    parts = []
    for kind in KINDS:
        parts.append(f"#### `{kind}`\n\n{table(kind)}")
        if RULES[kind]:
            parts.append(_prose(f"Rules: {RULES[kind]}"))
    parts.append(_prose(SAMPLES_RULE))
    return "\n\n".join(parts)


def rewrite(text: str) -> str:
    """``text`` with the part between the markers replaced by :func:`markdown`."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are not both in the file")
    return f"{head}{BEGIN}\n{markdown()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckernel.params_doc",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("doc", nargs="?", type=Path, help="the file to rewrite, e.g. "
                        "docs/kernels.md (none: print the tables)")
    parser.add_argument("--check", action="store_true", help="only say whether the file is "
                        "current; exit status 1 if not")
    args = parser.parse_args(argv)
    if args.doc is None:
        print(markdown())
        return 0
    text = args.doc.read_text(encoding="utf-8")
    new = rewrite(text)
    if args.check:
        if new != text:
            print(f"{args.doc}: the parameter tables differ from ckernel/params.py; run "
                  f"python -m ckernel.params_doc {args.doc}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
