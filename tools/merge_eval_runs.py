"""Merge `sharpv eval` runs made on the same question set into one report.

A run too long for one machine is split by methods into parts (each with dense and SharpV, so its
paired intervals are taken within the part); once every part is finished this writes one
``results.json``, ``predictions.jsonl``, ``run.json``, ``results.md`` and the plots, as one
``sharpv eval`` over all the methods would. Records that several parts share (dense, SharpV) must
have the same answers in each (the runs are deterministic): that is checked, and one copy kept.
Paired differences to SharpV are recomputed over the merged records.

    python tools/merge_eval_runs.py eval/fidelity-smollm2-dinov2/part-a eval/fidelity-smollm2-dinov2/part-b \\
        --out eval/fidelity-smollm2-dinov2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SAME = ("dataset", "max_new_tokens", "frames", "dtype", "device", "model")


def _key(record: dict) -> tuple:
    return record["method"], record["budget"]


def load_part(folder: Path) -> tuple[list[dict], dict[tuple, dict[str, dict]], dict]:
    for name in ("results.json", "predictions.jsonl", "run.json"):
        if not (folder / name).is_file():
            raise SystemExit(f"error: {folder} has no {name}: is that part finished? (an unfinished one holds .eval_state.json)")
    records = json.loads((folder / "results.json").read_text())
    answers: dict[tuple, dict[str, dict]] = {}
    for line in (folder / "predictions.jsonl").read_text().splitlines():
        p = json.loads(line)
        answers.setdefault((p["method"], p["budget"]), {})[p["id"]] = p
    return records, answers, json.loads((folder / "run.json").read_text())


def merge(parts: list[Path]) -> tuple[list[dict], list[dict], dict]:
    from sharpv.harness.evaluate import add_paired_differences

    records: list[dict] = []
    answers: dict[tuple, dict[str, dict]] = {}
    envs = []
    for folder in parts:
        recs, ans, env = load_part(folder)
        if envs and any(env.get(k) != envs[0].get(k) for k in SAME):
            diff = [k for k in SAME if env.get(k) != envs[0].get(k)]
            raise SystemExit(f"error: {folder} was run on other settings than {parts[0]} ({', '.join(diff)}); only runs on the same set merge")
        envs.append(env)
        for rec in recs:
            key = _key(rec)
            if key in answers:
                if ans[key] != answers[key]:
                    raise SystemExit(f"error: {rec['method']} @ {rec['budget']} answers differently in {folder}: the parts are not the same run")
                continue
            records.append(rec)
            answers[key] = ans[key]
    dense = [r for r in records if r["method_name"] == "dense"]
    records = dense + [r for r in records if r["method_name"] != "dense"]
    ids = list(answers[_key(records[0])])  # the questions in the set's order (predictions.jsonl's)
    if any(set(a) != set(ids) for a in answers.values()):
        raise SystemExit("error: the parts did not answer the same questions")
    index = {i: k for k, i in enumerate(ids)}
    per_record = [{index[i]: p for i, p in answers[_key(r)].items()} for r in records]
    add_paired_differences(records, per_record)
    for rec in records:
        rec["accuracy_vs_dense"] = rec["accuracy"] / dense[0]["accuracy"] if dense and dense[0]["accuracy"] else None
    predictions = [answers[_key(r)][i] for r in records for i in ids]
    env = dict(envs[0])
    env["command"] = None
    env["merged_from"] = [{"folder": str(p), "command": e.get("command"), "provenance": e.get("provenance")}
                          for p, e in zip(parts, envs)]
    env["merged_by"] = "python tools/merge_eval_runs.py " + " ".join(sys.argv[1:])
    env.pop("provenance", None)
    return records, predictions, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", type=Path, help="finished `sharpv eval --out` folders on the same set")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged report")
    args = parser.parse_args(argv)
    if len(args.parts) < 2:
        raise SystemExit("error: give at least two parts to merge")
    from sharpv.harness.eval_job import write_eval_report
    from sharpv.harness.report import write_json

    records, predictions, env = merge(args.parts)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", records)
    (args.out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions), encoding="utf-8")
    write_json(args.out / "run.json", env)
    write_eval_report(args.out, records, env)
    from sharpv.harness.provenance import describe

    lines = [f"- `{m['folder']}`: `{m['command']}`; {describe(m['provenance'])}." if m.get("provenance")
             else f"- `{m['folder']}`: `{m['command']}`." for m in env["merged_from"]]
    report = args.out / "results.md"
    report.write_text(report.read_text() + "\nMerged by `" + env["merged_by"] + "` from:\n\n" + "\n".join(lines) + "\n")
    print(f"merged {len(records)} records from {len(args.parts)} parts into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
