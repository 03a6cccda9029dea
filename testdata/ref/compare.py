"""compare: the per-step loss agreement of two training logs (JSON lines).

    python3 testdata/ref/compare.py OURS.jsonl REF.jsonl [--steps 50] [--tol 1e-4]

Each log holds one JSON object per line; the lines with both "step" and
"train_loss" count (moe-train's and ref_train.py's step lines; validation or
other lines are skipped, as is anything that is not JSON, such as progress).
For every step 1..STEPS, both logs must have the step and

    rel = |ours - ref| / |ref|  <=  TOL.

Prints the table at steps 1, 10 and STEPS, the step with the largest rel, and a
verdict. Exit status: 0 when every step agrees, 1 when some step exceeds TOL,
2 when a log is unreadable or lacks a step. Standard library only.
"""

import argparse
import json
import math
import sys


def read_losses(path):
    losses = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "step" in rec and "train_loss" in rec:
                losses[int(rec["step"])] = float(rec["train_loss"])
    return losses


def rel_diff(ours, ref):
    if ours == ref:
        return 0.0
    if not (math.isfinite(ours) and math.isfinite(ref)) or ref == 0:
        return math.inf
    return abs(ours - ref) / abs(ref)


def main(argv=None):
    ap = argparse.ArgumentParser(description="per-step relative loss difference of two logs")
    ap.add_argument("ours", help="moe-train's log (JSON lines)")
    ap.add_argument("ref", help="ref_train.py's log (JSON lines)")
    ap.add_argument("--steps", type=int, default=50, help="steps 1..N must agree (default 50)")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    args = ap.parse_args(argv)

    try:
        ours, ref = read_losses(args.ours), read_losses(args.ref)
    except OSError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    steps = range(1, args.steps + 1)
    for name, log in ((args.ours, ours), (args.ref, ref)):
        missing = [s for s in steps if s not in log]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            print(f"compare: {name}: no train_loss at step {shown} "
                  f"(moe-train logs every step only with train.log_every 1)", file=sys.stderr)
            return 2

    rel = {s: rel_diff(ours[s], ref[s]) for s in steps}
    print(f"{'step':>6}  {'ours':>14}  {'ref':>14}  {'rel diff':>10}")
    for s in sorted({1, 10, args.steps} & set(steps)):
        print(f"{s:>6}  {ours[s]:>14.8f}  {ref[s]:>14.8f}  {rel[s]:>10.3e}")
    worst = max(steps, key=lambda s: rel[s])
    print(f"max rel diff {rel[worst]:.3e} at step {worst} over steps 1..{args.steps} "
          f"(tolerance {args.tol:g})")
    bad = [s for s in steps if not rel[s] <= args.tol]
    if bad:
        print(f"FAIL: {len(bad)} of {args.steps} steps exceed the tolerance, first at step "
              f"{bad[0]}")
        return 1
    print(f"OK: all {args.steps} steps within {args.tol:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
