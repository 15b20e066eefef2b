"""Print the CI build matrix derived from recipes/.

  q3build matrix [--format github|json]

`github` prints one line, `matrix={"include":[…]}`, to append to $GITHUB_OUTPUT; the workflow
reads it with fromJSON. `json` prints the entries and the targets left out, with the reason.
"""

from __future__ import annotations

import json

from q3build.commands._common import print_json
from q3build.release import matrix

NAME = "matrix"
HELP = "print the CI build matrix from the recipes"


def add_arguments(p) -> None:
    p.add_argument("--format", choices=("github", "json"), default="json",
                   help="github: one `matrix=…` line for $GITHUB_OUTPUT; json: entries and exclusions (default)")


def run(args, ctx) -> int:
    if args.format == "github":
        print("matrix=" + json.dumps(matrix.github(ctx.project), separators=(",", ":"), sort_keys=True))
        return 0
    included, excluded = matrix.entries(ctx.project)
    print_json({"include": [e.to_record() for e in included], "excluded": excluded})
    return 0
