"""CPU inference speed: clipforge's precisions and backends against Hugging Face transformers, interleaved.

    python benchmarks/bench_inference.py [--threads 2] [--reps 5] [--write]

On identical random ViT-B/32 weights (clipforge's, written as an HF folder and loaded by
`transformers.CLIPModel`), each round times one call of every variant in turn (A, B, C, ..., then again;
medians over `--reps` rounds, the same thread count everywhere), so machine load hits all sides alike:

- images/s: clipforge (each as `clipforge.load(..., backend, precision)` runs it) fp32, bf16, onnx fp32,
  onnx int8 (dynamic), torch int8 (torch.ao dynamic), and HF fp32; with each side's share of the measured
  matmul peak (FLOPs counted by torch's FlopCounterMode).
- captions/s on Flickr8k captions: HF at 77-token padding against clipforge's trimmed encoding (per batch,
  and bucketed by length), with the largest difference from the padded path.
- EfficientNet-Lite0 and ModifiedResNet (RN50) towers: the plain eager forward against the folded one.
- tokenizer: clipforge's BPE against `CLIPTokenizerFast` (captions/s, warm caches, same captions).
- LiT acceptance (`--lit MODEL`, Flickr8k test split): R@1 of the torch model, its fp32 and int8 ONNX
  exports (dynamic, and static calibrated on train images), with bootstrap 95% CIs and paired differences.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import write_section
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from clipforge.checkpoint import load, save
from clipforge.checkpoint.hf import save_hf
from clipforge.checkpoint.onnx import load_onnx_folder
from clipforge.checkpoint.onnx_export import ExportConfig, export_onnx
from clipforge.data.specs import open_data
from clipforge.device import bf16_supported
from clipforge.errors import CheckpointError
from clipforge.eval.run import EvalConfig, embed_dataset
from clipforge.models import create_model, efficientnet
from clipforge.models.efficientnet import EfficientNetLite0
from clipforge.models.inputs import encode_by_length
from clipforge.probe.stats import bootstrap_ci
from clipforge.tokenizer import ClipTokenizer
from clipforge.tokenizer.bpe import build_vocab, read_merges

REPO = Path(__file__).resolve().parents[1]
FLICKR = REPO.parent / "shared" / "data" / "flickr8k"
Call = Callable[[], Any]


def interleaved(calls: dict[str, Call], reps: int) -> dict[str, float]:
    """Median seconds per call of each variant, timed in turn (one call each per round) after a warm-up."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_peak(dtype: torch.dtype, reps: int, size: int = 1024) -> float:
    """FLOP/s of a square matmul in `dtype` on the current threads (median of `reps`)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    seconds = interleaved({"mm": lambda: torch.mm(a, b)}, reps)["mm"]
    return 2 * size**3 / seconds


def flops(call: Call) -> int:
    """FLOPs of one call, as torch's FlopCounterMode counts them (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


def captions(n: int) -> list[str]:
    """The first n Flickr8k captions, or seeded caption-like strings when Flickr8k is absent."""
    path = FLICKR / "captions.txt"
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as f:
            return [row["caption"] for row in csv.DictReader(f)][:n]
    rng = np.random.default_rng(0)
    words = ["a", "man", "dog", "runs", "on", "the", "beach", "in", "red", "shirt", "with", "two", "ball"]
    return [" ".join(rng.choice(words, rng.integers(5, 20))) for _ in range(n)]


class Sides:
    """The ViT-B/32 variants on identical weights: clipforge as `clipforge.load` runs it, and HF."""

    def __init__(self, work: Path) -> None:
        torch.manual_seed(0)
        save(create_model("ViT-B-32"), work / "vit")
        save_hf(load(work / "vit")[0], work / "hf")
        import transformers

        self.hf = transformers.CLIPModel.from_pretrained(work / "hf").eval()
        export_onnx(work / "vit", work / "onnx", ExportConfig(int8=True))
        self.models = {
            "fp32": load(work / "vit")[0],
            "bf16": load(work / "vit", precision="bf16")[0],
            "onnx fp32": load(work / "onnx")[0],
            "onnx int8": load(work / "onnx", precision="int8")[0],
            "torch int8": load(work / "vit", precision="int8")[0],
        }

    def image_calls(self, pixels: torch.Tensor) -> dict[str, Call]:
        hf = self.hf
        calls: dict[str, Call] = {"HF transformers fp32": lambda: hf.get_image_features(pixel_values=pixels)}
        for name, model in self.models.items():
            calls[f"clipforge {name}"] = lambda m=model: m.encode_image(pixels)
        return calls

    def text_calls(self, tokens: torch.Tensor, batch: int) -> dict[str, Call]:
        chunks, hf, fp32 = tokens.split(batch), self.hf, self.models["fp32"]
        calls: dict[str, Call] = {
            "HF transformers fp32 (77 tokens)": lambda: [hf.get_text_features(input_ids=t) for t in chunks],
            "clipforge fp32, trimmed per batch": lambda: [fp32.encode_text(t) for t in chunks],
        }
        for name, model in self.models.items():
            calls[f"clipforge {name}, length buckets"] = lambda m=model: encode_by_length(m, tokens, batch)
        return calls


def bench_images(sides: Sides, batch: int, reps: int, peaks: dict[str, float]) -> list[str]:
    pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    calls = sides.image_calls(pixels)
    with torch.inference_mode():
        seconds = interleaved(calls, reps)
        per_image = flops(calls["clipforge fp32"]) / batch
        theirs = calls["HF transformers fp32"]().pooler_output
        hf_diff = float((calls["clipforge fp32"]() - theirs).abs().max())
    base = seconds["HF transformers fp32"]
    rows = [f"Identical weights: clipforge fp32 vs HF image features max abs diff {hf_diff:.2e}; "
            f"{per_image / 1e9:.2f} GFLOP per image; matmul peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
            f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; CPU bf16 units: {bf16_supported()}.", "",
            f"| images (batch {batch}) | images/s | vs HF fp32 | % of matmul peak |", "|---|---:|---:|---:|"]
    for name, s in seconds.items():
        rate = batch / s
        kind = "int8" if "int8" in name else "bf16" if "bf16" in name else "fp32"
        share = "-" if kind == "int8" else f"{100 * rate * per_image / peaks[kind]:.0f}% ({kind})"
        rows.append(f"| {name} | {rate:.1f} | {base / s:.2f}x | {share} |")
    return rows


def bench_captions(sides: Sides, n: int, batch: int, reps: int) -> list[str]:
    texts = captions(n)
    tokens = ClipTokenizer(77)(texts)  # [N, 77], zero-padded
    calls = sides.text_calls(tokens, batch)
    with torch.inference_mode():
        seconds = interleaved(calls, reps)
        padded = torch.cat([sides.hf.get_text_features(input_ids=t).pooler_output
                            for t in tokens.split(batch)])  # [N, E], all 77 positions
        trimmed = encode_by_length(sides.models["fp32"], tokens, batch, normalize=False)
    diff = float((trimmed - padded).abs().max())
    mean_len = float((tokens != 0).sum(dim=1).float().mean())
    base = seconds["HF transformers fp32 (77 tokens)"]
    rows = [f"{n} captions (mean {mean_len:.1f} tokens, batches of {batch}); trimmed/bucketed clipforge vs "
            f"HF at 77-token padding: max abs diff of the text features {diff:.2e}.", "",
            "| captions | captions/s | vs HF fp32 |", "|---|---:|---:|"]
    rows += [f"| {name} | {n / s:.1f} | {base / s:.2f}x |" for name, s in seconds.items()]
    return rows


def _eager(model: nn.Module) -> Call:
    """The plain forward path: grad mode on but nothing requiring grad, so nothing is recorded or folded."""
    model.requires_grad_(False)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return model(x)  # type: ignore[no-any-return]

    return run  # type: ignore[return-value]


def bench_conv_towers(batch: int, reps: int) -> list[str]:
    torch.manual_seed(0)
    effnet = EfficientNetLite0().eval()
    efficientnet.load_pretrained(effnet)  # ImageNet weights: real batch-norm statistics to fold
    towers = {"EfficientNet-Lite0 backbone (ImageNet weights)": effnet,
              "ModifiedResNet RN50 image tower (random weights)": create_model("RN50").visual.eval()}
    pixels = torch.randn(batch, 3, 224, 224)
    rows = [f"| conv tower (batch {batch}) | plain img/s | folded img/s | speed-up | max rel diff |",
            "|---|---:|---:|---:|---:|"]
    for name, tower in towers.items():
        plain = _eager(tower)
        with torch.inference_mode():
            folded = lambda t=tower: t(pixels)  # noqa: E731
            seconds = interleaved({"plain": lambda p=plain: p(pixels), "folded": folded}, reps)
            reference = plain(pixels)
            diff = float((folded() - reference).abs().max() / reference.abs().max())
        rows.append(f"| {name} | {batch / seconds['plain']:.1f} | {batch / seconds['folded']:.1f} | "
                    f"{seconds['plain'] / seconds['folded']:.2f}x | {diff:.1e} |")
    return rows


def bench_tokenizer(n: int, reps: int) -> list[str]:
    import transformers

    texts, ours = captions(n), ClipTokenizer(77)
    hf = transformers.CLIPTokenizerFast.from_pretrained(_hf_tokenizer_folder())
    calls = {"clipforge ClipTokenizer": lambda: ours(texts),
             "HF CLIPTokenizerFast": lambda: hf(texts, padding="max_length", max_length=77, truncation=True)}
    seconds = interleaved(calls, reps)
    same = torch.equal(ours(texts[:200]), _hf_ids(hf, texts[:200]))
    rows = [f"{n} captions per call, warm caches; ids identical on the first 200 (zero padding): {same}.", "",
            "| tokenizer | captions/s |", "|---|---:|"]
    return rows + [f"| {name} | {n / s:,.0f} |" for name, s in seconds.items()]


def _hf_tokenizer_folder() -> Path:
    """A CLIPTokenizerFast folder (vocab.json, merges.txt) built from clipforge's BPE merges: no download."""
    merges = read_merges()
    folder = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    vocab = {token: i for i, token in enumerate(build_vocab(merges))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    return folder


def _hf_ids(hf: Any, texts: list[str]) -> torch.Tensor:
    ids = torch.tensor(hf(texts, padding="max_length", max_length=77, truncation=True)["input_ids"])
    after_end = torch.cumsum(ids == 49407, dim=1) - (ids == 49407).long() > 0  # HF pads with end-of-text
    return ids.masked_fill(after_end, 0)


def t2i_hits(model: Any, preprocess: Any, tokenizer: Any, spec: str) -> tuple[np.ndarray, float]:
    """Per-caption text-to-image R@1 hits on a data spec, and the seconds the encoding took."""
    start = time.perf_counter()
    with torch.inference_mode():
        features = embed_dataset(model, preprocess, tokenizer, open_data(spec), EvalConfig(num_workers=2))
    seconds = time.perf_counter() - start
    scores = features.texts @ features.images.t()  # [T, N]
    true = scores.gather(1, features.text_to_image.view(-1, 1))  # [T, 1]
    return ((scores > true).sum(dim=1) == 0).numpy().astype(np.float64), seconds


def bench_lit(model: Path, work: Path, calibration_images: int) -> list[str]:
    """Flickr8k test R@1 of a LiT model: torch fp32 against its ONNX exports (fp32, int8 dynamic, static)."""
    export_onnx(model, work / "lit-onnx", ExportConfig(int8=True))
    torch_model, preprocess, tokenizer = load(model)
    variants = {"torch fp32 (folded conv tower)": torch_model,
                "onnx fp32": load_onnx_folder(work / "lit-onnx", "fp32"),
                "onnx int8 dynamic": load_onnx_folder(work / "lit-onnx", "int8")}
    static, refused = f"onnx int8 static ({calibration_images} train images)", ""
    try:
        if calibration_images:
            calibration = ExportConfig(True, None, f"flickr8k:{FLICKR}:train", calibration_images)
            export_onnx(model, work / "lit-static", calibration)
            variants[static] = load_onnx_folder(work / "lit-static", "int8")
    except CheckpointError as err:  # the export's own parity check refused the static graphs
        refused = f"{static}: refused by the export's parity check ({err})."
    spec = f"flickr8k:{FLICKR}:test"
    results = {name: t2i_hits(m, preprocess, tokenizer, spec) for name, m in variants.items()}
    reference = results["torch fp32 (folded conv tower)"][0]
    rows = [f"`{model}` on `flickr8k:...:test` ({len(reference)} captions); 95% CIs by bootstrap over "
            "captions (2000 resamples); differences are paired with torch fp32 caption by caption.", "",
            "| LiT model | t2i R@1 | 95% CI | minus torch fp32 | 95% CI | eval seconds |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, (hits, seconds) in results.items():
        low, high = bootstrap_ci(hits, 2000)
        d_low, d_high = bootstrap_ci(hits - reference, 2000)
        diff = (hits - reference).mean()
        rows.append(f"| {name} | {hits.mean():.4f} | [{low:.4f}, {high:.4f}] | {diff:+.4f} "
                    f"| [{d_low:+.4f}, {d_high:+.4f}] | {seconds:.0f} |")
    return [*rows, "", refused] if refused else rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--images", type=int, default=16, help="images per call")
    parser.add_argument("--captions", type=int, default=512, help="captions per call")
    parser.add_argument("--lit", type=Path, default=None, help="a Flickr8k LiT model for the R@1 check")
    parser.add_argument("--calibration-images", type=int, default=300,
                        help="train images for the static int8 export of the LiT model (0: skip it)")
    parser.add_argument("--lit-only", action="store_true",
                        help="only the LiT R@1 check (its own RESULTS section, inference-lit)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if args.lit_only:
        with tempfile.TemporaryDirectory(prefix="bench-lit-") as tmp:
            text = "\n".join(bench_lit(args.lit, Path(tmp), args.calibration_images))
        print(text)
        if args.write:
            write_section("inference-lit", text)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        peaks = {"fp32": matmul_peak(torch.float32, args.reps),
                 "bf16": matmul_peak(torch.bfloat16, args.reps)}
        sides = Sides(Path(tmp))
        sections = {"images": bench_images(sides, args.images, args.reps, peaks),
                    "captions": bench_captions(sides, args.captions, 64, args.reps)}
    sections["conv towers"] = bench_conv_towers(args.images, args.reps)
    sections["tokenizer"] = bench_tokenizer(5000, args.reps)
    sections["embed"] = ["`clipforge embed` end-to-end against the raw encoder: `benchmarks/bench_embed.py` "
                         "(section `embed-throughput`)."]
    if args.lit is not None:
        with tempfile.TemporaryDirectory(prefix="bench-lit-") as tmp:
            sections["lit"] = bench_lit(args.lit, Path(tmp), args.calibration_images)
    sections["load"] = [f"1-min load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end."]
    text = "\n".join(f"{line}" for rows in sections.values() for line in [*rows, ""])
    print(text)
    if args.write:
        write_section("inference", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
