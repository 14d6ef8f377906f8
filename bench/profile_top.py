"""Where a py-spy profile's time goes: the top functions by own and by inclusive samples.

Run: .venv/bin/python bench/profile_top.py .run/bench/e2e/profiles/e2e-r1-durable.txt [--top 40]

Reads py-spy's collapsed stacks (`--format raw`, as `bench_e2e.py --profile` writes them);
prints each function's share of all samples, once as the frame that was running (own) and
once anywhere on the stack (inclusive, counted once per sample however deep it recurses).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# "name (path/to/file.py:123)" -> "name (file.py)": one row per function, not per line.
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<path>[^:()]*)(?::\d+)?\)$")


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["path"]
    marker = "site-packages/"
    short = path.split(marker, 1)[1] if marker in path else path.rsplit("/service/", 1)[-1]
    return f"{match['name']} ({short})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    print(f"{total} samples")
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\n-- {title} --")
        for name, count in counter.most_common(args.top):
            print(f"{100 * count / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
