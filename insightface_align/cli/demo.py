"""The demo: synthetic data -> train the `demo` recipe on the CPU -> evaluate -> export -> report.

Writes OUT/report.md with the NME table (untrained vs trained, each decoder), OUT/ced.png,
OUT/train/curves.png, OUT/samples.png (test faces with predicted landmarks), and the
deploy checkpoint OUT/deploy-symbol.json / OUT/deploy-0000.params.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from .common import HelpFormatter



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (report, plots, run and deploy checkpoint)")
    p.add_argument("--data", default="data/synth2d", help="packed data folder (made here when missing)")
    p.add_argument("--train-count", type=int, default=2000, help="synthetic training images to generate")
    p.add_argument("--test-count", type=int, default=300, help="synthetic test images to generate")
    p.add_argument("--recipe", default="demo", help="recipe to train (a name under insightface_align/recipes or a path)")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's max_steps")
    p.add_argument("--width", type=float, default=None, help="override the recipe's width multiplier")
    p.add_argument("--batch", type=int, default=None, help="override train.batch_per_device")
    p.add_argument("--workers", type=int, default=2, help="data worker processes")
    return p.parse_args(argv)


def run(cmd):
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def make_data(data: Path, train_count: int, test_count: int, workers: int) -> None:
    """Generate and pack the synthetic 2D set unless data/train.rec and data/test.rec exist."""
    if (data / "train.rec").exists() and (data / "test.rec").exists():
        print(f"using existing {data}/train.rec and test.rec")
        return
    raw = data.parent / (data.name + "-raw")
    for split, count, seed in (("train", train_count, 1), ("test", test_count, 2)):
        run([sys.executable, "-m", "insightface_align", "synth", "--mode", "2d", "--out", raw / split,
             "--count", count, "--seed", seed, "--workers", workers, "--overwrite"])
        run([sys.executable, "-m", "insightface_align", "pack", "--format", "300w", "--input", raw / split,
             "--output", data, "--name", split, "--workers", workers])


def evaluate(model, rec, decoders):
    """NME per image for each decoder, running the network once."""
    from ..data.config import DataConfig
    from ..evaluate import predict_rec_decoders
    from ..metrics import per_image_nme

    cfg = DataConfig(batch_size=32, input_size=model.input_size, heatmap_size=model.heatmap_size, train=False,
                     shuffle=False, num_workers=0, last_batch="pad")
    out = predict_rec_decoders(model, rec, cfg, decoders)
    return {d: per_image_nme(p, out["gt"], "outer_corners") for d, p in out["preds"].items()}


def samples_png(model, rec, path, count=8):
    import cv2

    from ..data.config import DataConfig
    from ..data.iterator import AlignIter
    from ..metrics import DEFAULT_DECODER, decode

    cfg = DataConfig(batch_size=count, train=False, shuffle=False, num_workers=0, last_batch="pad")
    with AlignIter(rec, cfg, copy=True) as it:
        batch = next(iter(it))
    images = batch.data[0].asnumpy()
    pred, _ = decode(model(images), DEFAULT_DECODER, 128)
    tiles = []
    for img, p, g in zip(images, pred, batch.points):
        tile = np.ascontiguousarray(img.transpose(1, 2, 0)[:, :, ::-1].astype(np.uint8))
        tile = cv2.resize(tile, (256, 256), interpolation=cv2.INTER_LINEAR)
        for (x, y) in g[:, :2]:
            cv2.circle(tile, (int((x + 0.5) * 2), int((y + 0.5) * 2)), 2, (0, 0, 255), -1, cv2.LINE_AA)
        for (x, y) in p:
            cv2.circle(tile, (int((x + 0.5) * 2), int((y + 0.5) * 2)), 2, (0, 255, 0), -1, cv2.LINE_AA)
        tiles.append(tile)
    grid = np.concatenate([np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles), 4)], axis=0)
    cv2.imwrite(str(path), grid)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    import mxnet as mx

    from .. import export as ex
    from ..metrics import DECODERS, DEFAULT_DECODER, ced, summarise
    from ..model import HeatmapModel
    from ..plots import plot_ced
    from ..recipe import load_recipe
    from ..train import RunSpec, TrainConfig, Trainer
    from insightface_align.symbols.network import get_symbol

    t0 = time.time()
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    make_data(data, args.train_count, args.test_count, args.workers)
    t_data = time.time() - t0
    overrides = {"multiplier": args.width} if args.width else {}
    recipe = load_recipe(args.recipe, **overrides)
    train = dict(recipe.train)
    if args.steps:
        train["max_steps"] = args.steps
        train["lr_steps"] = [s for s in train.get("lr_steps", []) if s < args.steps] or [args.steps + 1]
    if args.batch:
        train["batch_per_device"] = args.batch
    train.update(num_workers=args.workers, val_every=max(1, train["max_steps"] // 4),
                 checkpoint_every=max(1, train["max_steps"] // 4))
    cfg = TrainConfig.from_dict(train)
    test_rec = str(data / "test.rec")
    spec = RunSpec(train_rec=str(data / "train.rec"), out_dir=str(out / "train"), val_recs={"test": test_rec},
                   contexts=[mx.cpu()], progress=sys.stderr.isatty())
    print(f"training {recipe.name} (width {recipe.network.multiplier}, {cfg.max_steps} steps, "
          f"batch {cfg.batch_per_device}) on {data}/train.rec", flush=True)
    t1 = time.time()
    result = Trainer(recipe, cfg, spec).run()
    t_train = time.time() - t1
    if result["stopped"]:  # SIGTERM/SIGINT: the trainer saved its step; nothing else is written
        print(f"stopped by a signal at step {result['step']}: checkpoint {out / 'train'}/model-{result['step']:04d} "
              f"saved; no export or report written", file=sys.stderr)
        return 1

    # Untrained baseline: the same graph with the trainer's seeded initialisation.
    sym = get_symbol(recipe.network)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
    mx.random.seed(cfg.seed)
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    untrained = HeatmapModel(sym, *mod.get_params(), batch_size=32)
    dsym, darg, daux = ex.deploy_graph(str(out / "train" / "model"), cfg.max_steps)
    ex.save_deploy(str(out / "deploy"), dsym, darg, daux, config=ex.source_config(str(out / "train" / "model"),
                                                                                   cfg.max_steps))
    trained = HeatmapModel.load(str(out / "deploy"), 0, batch_size=32)
    rows, curves = [], {}
    for label, model in (("untrained", untrained), ("trained", trained)):
        per_decoder = evaluate(model, test_rec, DECODERS)
        for decoder, errors in per_decoder.items():
            s = summarise(errors, 0.10)
            rows.append((label, decoder, s))
            if decoder == DEFAULT_DECODER:
                curves[f"{label} (NME {100 * s['nme']:.2f}%)"] = ced(errors, 0.10)
    plot_ced(curves, 0.10, out / "ced.png", title="synthetic 2D test set: CED")
    samples_png(trained, test_rec, out / "samples.png")
    t_all = time.time() - t0
    table = ["| model | decoder | NME (%) | failure@10% (%) | AUC@10% |", "|---|---|---|---|---|"]
    for label, decoder, s in rows:
        table.append(f"| {label} | {decoder} | {100 * s['nme']:.2f} | {100 * s['failure_rate']:.1f} | "
                     f"{s['auc']:.3f} |")
    report = [f"# Demo report: recipe `{recipe.name}`", "",
              f"Synthetic 2D data ({data}); test set: {data}/test.rec, NME normalised by the outer eye corners.",
              f"Training: {cfg.max_steps} steps, batch {cfg.batch_per_device}, width {recipe.network.multiplier}, "
              f"CPU. Time: data {t_data:.0f} s, training {t_train:.0f} s, total {t_all:.0f} s.", "",
              *table, "", "![CED](ced.png)", "", "![training curves](train/curves.png)", "",
              "Test faces: ground truth red, prediction green.", "", "![samples](samples.png)", "",
              f"Deploy checkpoint: `{out}/deploy-symbol.json`, `{out}/deploy-0000.params` (epoch 0)."]
    (out / "report.md").write_text("\n".join(report) + "\n")
    (out / "report.json").write_text(json.dumps(
        {"rows": [{"model": m, "decoder": d, **s} for m, d, s in rows], "seconds": {"data": t_data,
         "train": t_train, "total": t_all}}, indent=1))
    print("\n".join(table))
    print(f"report: {out / 'report.md'} ({t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
