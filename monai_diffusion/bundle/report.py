"""``monai-diffusion report --out DIR [--quick]``: run every bundle's evaluation and write a static HTML report.

Bundles register themselves by being present: every folder of ``bundles/`` with ``configs/evaluate.json`` and its
weights is evaluated (at its quick setting with ``--quick``) into ``DIR/<name>/``. An evaluation writes
``metrics.json`` holding a ``table`` (``columns``, ``rows``: the method against its baselines), optional ``notes``
and ``figures`` (PNG files in the same folder); the report renders those, one section per survey category, with a
link to the bundle's model card. ``DIR/metrics.json`` gathers every bundle's metrics. The embedded data set is
built on first use by the bundles themselves.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "build_report", "CATEGORIES"]

#: the survey's seven application categories, in the report's order
CATEGORIES: tuple[str, ...] = (
    "anomaly detection",
    "denoising",
    "reconstruction",
    "segmentation",
    "image-to-image translation",
    "generation",
    "other",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for index.html, metrics.json and each bundle's outputs")
    parser.add_argument("--quick", action="store_true", help="each bundle's quick setting (minutes on a CPU)")
    parser.add_argument("--only", action="append", default=None, help="evaluate only these bundles (repeatable)")
    parser.add_argument("--dataset-dir", default="data", help="folder of the embedded data (built when missing)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="ID=VALUE", help="override a config id of every bundle"
    )


def _section(entry: dict[str, Any]) -> str:
    name = html.escape(entry["name"])
    parts = [f'<section id="{name}"><h3>{html.escape(entry.get("title") or name)}</h3>']
    if entry.get("task"):
        parts.append(f"<p>{html.escape(entry['task'])}</p>")
    if entry.get("error"):
        parts.append(f"<p><b>Evaluation failed:</b></p><pre>{html.escape(entry['error'])}</pre>")
    metrics = entry.get("metrics") or {}
    table = metrics.get("table")
    if table:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table["columns"])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
            for row in table["rows"]
        )
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
    if metrics.get("notes"):
        parts.append(f"<p class='notes'>{html.escape(str(metrics['notes']))}</p>")
    for fig in metrics.get("figures", []):
        src = html.escape(f"{entry['name']}/{fig['path']}")
        parts.append(
            f"<figure><img src='{src}' alt='{html.escape(fig['title'])}'><figcaption>"
            f"{html.escape(fig['title'])}</figcaption></figure>"
        )
    if entry.get("card"):
        parts.append(
            f"<p><a href='{html.escape(entry['card'])}'>Model card</a>"
            f" (evaluated in {entry.get('wall_s', 0):.0f} s)</p>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def build_report(out: str | Path, entries: list[dict[str, Any]], quick: bool) -> Path:
    """Write ``out/index.html`` and ``out/metrics.json`` from evaluated bundle entries."""
    out = Path(out)
    by_cat: dict[str, list[dict]] = {}
    for e in entries:
        by_cat.setdefault(e.get("category") or "other", []).append(e)
    body = []
    for cat in [*CATEGORIES, *sorted(set(by_cat) - set(CATEGORIES))]:
        if cat in by_cat:
            body.append(f"<h2>{html.escape(cat.capitalize())}</h2>")
            body += [_section(e) for e in by_cat[cat]]
    missing = [c for c in CATEGORIES if c not in by_cat]
    setting = "quick setting" if quick else "full setting"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>monai_diffusion report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{image-rendering:pixelated;max-width:100%}}.notes{{color:#444}}</style></head><body>
<h1>monai_diffusion: bundles against their baselines</h1>
<p>Generated {time.strftime("%Y-%m-%d %H:%M")} at each bundle's {setting} on the embedded data set (a simulation
from the MNI152 template, not clinical data). Categories without a bundle yet: {html.escape(", ".join(missing)) or "none"}.</p>
{"".join(body) or "<p>No bundle with an evaluation was found.</p>"}
</body></html>
"""
    (out / "index.html").write_text(page)
    (out / "metrics.json").write_text(
        json.dumps({e["name"]: e.get("metrics") or {"error": e.get("error")} for e in entries}, indent=2) + "\n"
    )
    return out / "index.html"


def run(args: argparse.Namespace) -> int:
    from monai_diffusion.bundle import runner
    from monai_diffusion.bundle.cli import parse_overrides

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write_test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise OSError(f"--out {str(out)!r} is not writable: {err}") from err
    entries = []
    failed = 0
    for b in runner.list_bundles():
        folder = Path(b["path"])
        if args.only and b["name"] not in args.only:
            continue
        if not (folder / "configs" / "evaluate.json").is_file():
            continue
        entry: dict[str, Any] = {
            "name": b["name"],
            "title": b["title"],
            "task": b["task"],
            "category": b["category"],
        }
        card = folder / "docs" / "README.md"
        if card.is_file():
            (out / b["name"]).mkdir(exist_ok=True)
            shutil.copyfile(card, out / b["name"] / "model_card.md")
            entry["card"] = f"{b['name']}/model_card.md"
        if not b["weights"]:
            entry["error"] = (
                f"no trained weights in {folder / 'models'}; train with `monai-diffusion bundle train {b['name']}`"
            )
            entries.append(entry)
            continue
        print(f"report: evaluating {b['name']} ({'quick' if args.quick else 'full'}) ...", flush=True)
        try:
            result = runner.evaluate_bundle(
                folder,
                quick=args.quick,
                overrides={
                    "output_dir": str(out / b["name"]),
                    "dataset_dir": args.dataset_dir,
                    "progress": False,
                    **parse_overrides(args.set),
                },
            )
            entry["metrics"] = result.get("metrics")
            entry["wall_s"] = result["wall_s"]
        except Exception:  # a failing bundle is reported, the others still run
            entry["error"] = traceback.format_exc(limit=4)
            failed += 1
        entries.append(entry)
    page = build_report(out, entries, args.quick)
    print(f"report: {len(entries)} bundle(s), {failed} failed; open {page} (metrics in {out / 'metrics.json'})")
    return 1 if failed else 0
