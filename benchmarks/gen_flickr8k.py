"""Text-to-image on Flickr8k: CLIP-feature FD and KID against held-out photos, and R-precision.

Draws one image for each of `--n` seeded test captions (half A of the shuffled test photos) and compares
it, through a clipforge CLIP, with the other half's photos; beside it the controls: dVAE reconstructions
of half A (the pipeline's ceiling), half A downsized to the dVAE's side, half A itself (the real-vs-real
floor of FD/KID and the CLIP's own R-precision) and the generated images scored against shuffled captions
(R-precision chance). Writes a JSON record, a contact sheet (real / reconstruction / generated, one
column per caption) and, with --write, the `gen-flickr8k` section of benchmarks/RESULTS.md.

    python benchmarks/gen_flickr8k.py --generator runs/f8-generator/final \
        --clip /work/baselines/flickr8k-lit/final --data flickr8k:../shared/data/flickr8k:test \
        --n 500 --out runs/gen-f8 --write
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

ROWS = ("generated", "generated, shuffled captions", "dVAE reconstruction", "real at the dVAE's size",
        "real")


def _num(block: dict[str, Any], key: str, digits: int = 3) -> str:
    return f"{block[key]:.{digits}f}" if key in block else "-"


def quality_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: one per condition (FD, KID ± its subset std, R-precision with 95% CI)."""
    rows = ["| images | CLIP FD | KID (± std over subsets) | R-precision [95% CI] |", "|---|---|---|---|"]
    for name in ROWS:
        block = report["conditions"][name]
        rp = block["r_precision"]
        kid = _kid(block) if "kid" in block else "-"
        rows.append(f"| {name} | {_num(block, 'fd')} | {kid} | "
                    f"{rp['accuracy']:.3f} [{rp['ci95'][0]:.3f}, {rp['ci95'][1]:.3f}] |")
    rows.append(f"| (chance) | | | {report['chance_r_precision']:.3f} |")
    return rows


def contact_sheet(images: dict[str, list[Any]], columns: int) -> bytes:
    """PNG bytes: rows real at the dVAE's size / reconstruction / generated for the first captions."""
    from PIL import Image

    names = ("real at the dVAE's size", "dVAE reconstruction", "generated")
    side = images["generated"][0].width * 3
    sheet = Image.new("RGB", (side * columns, side * len(names)), (255, 255, 255))
    for row, name in enumerate(names):
        for col, image in enumerate(images[name][:columns]):
            sheet.paste(image.resize((side, side), Image.Resampling.NEAREST), (col * side, row * side))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True, help="generator folder")
    parser.add_argument("--clip", required=True, help="CLIP spec the metrics use")
    parser.add_argument("--data", required=True, help="captioned photos, e.g. flickr8k:ROOT:test")
    parser.add_argument("--n", type=int, default=500, help="captions drawn (and reference photos)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--cond-scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and sheet.png")
    parser.add_argument("--label", default="", help="a line saying what was trained (RESULTS)")
    parser.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    args = parser.parse_args()

    import torch

    from clipforge.dalle.sampling import SamplingConfig
    from clipforge.fileio import write_bytes_atomic, write_json
    from clipforge.generate.photo_quality import PhotoQualityConfig, photo_quality

    torch.set_num_threads(args.threads)
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, cond_scale=args.cond_scale)
    config = PhotoQualityConfig(args.generator, args.clip, args.data, n=args.n, seed=args.seed,
                                sampling=sampling)
    start = time.perf_counter()
    report, images = photo_quality(config)
    report["seconds"] = time.perf_counter() - start
    write_json(report, args.out / "report.json")
    write_bytes_atomic(args.out / "sheet.png", contact_sheet(images, 16))
    table = quality_table(report)
    print("\n".join(table))
    print(json.dumps({"seconds": round(report["seconds"], 1), "images_per_s": report["images_per_s"]}))
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import write_section

        command = " ".join(["python", "benchmarks/gen_flickr8k.py", *sys.argv[1:]])
        write_section("gen-flickr8k", "\n".join([
            "## Text to image on Flickr8k (`benchmarks/gen_flickr8k.py`)", "", args.label, "",
            f"`{command}`", "",
            f"{args.n} seeded test captions (one per photo, half A of the shuffled test photos) drawn once "
            f"each; every set is compared with the other {args.n} test photos (half B) through "
            f"`{args.clip}`. R-precision: the caption must beat 99 random captions of other half-A photos. "
            f"Seed {args.seed}; "
            f"sampling temperature {args.temperature}, top-k {args.top_k}, guidance {args.cond_scale}.", "",
            *table, ""]))
    return 0


def _kid(block: dict[str, Any]) -> str:
    """KID ± its spread over subsets, or a note when one subset took both sets whole (no spread)."""
    if block.get("kid_subsets") == 1:
        return f"{block['kid']:.4f} (whole sets)"
    return f"{block['kid']:.4f} ± {block['kid_std']:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
