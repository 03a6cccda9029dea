#!/bin/sh
# physics-table: the table of a moe-rollout --physics run (its JSON lines on
# FILE): mean position error as % of the scene diagonal at each report frame,
# for the trained and the held-out scenario types, over all scenes and over
# the fittable ones (prompt plus the frames to write fit the context), with
# the scene counts behind each mean; then the malformed-frame rate. The
# layout of the moe100m-physics model card's table.
#
# usage: physics-table.sh FILE
set -eu
jq -r 'select(.summary) | .summary as $s
  | ($s.report_frames | map(tostring)) as $f
  | "split     scenes    " + ($f | map("err@" + . + " (n)") | join("      ")),
    (["trained", "heldout"][] as $g | ["all", "fittable"][] as $k
     | $s[$g][$k] as $r
     | "\($g)/\($k)" + (" " * (18 - ($g + $k | length)))
       + "\($r.scenes)\t"
       + ($f | map(. as $i | ($r.err[$i] | if . == null then "-" else (. * 100 | round / 100 | tostring) + "%" end)
                          + " (\($r.n[$i]))") | join("\t"))),
    "malformed frames: \($s.malformed_frames) of \($s.scenes * $s.frames) (rate \($s.malformed_rate * 1e4 | round / 1e4)); scenes \($s.scenes), fittable \($s.fittable_scenes)"' "$1"
