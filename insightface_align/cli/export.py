"""Export a checkpoint for deployment: inference-only graph (+ optional BN folding, MKLDNN
fusion, INT8 quantisation, ONNX), and report NME before/after on a test set.

Examples:
  tools/export.py --prefix runs/sdu-2d/model --epoch 30000 --out deploy/sdu-2d
  tools/export.py --prefix runs/demo/model --epoch 1800 --out deploy/demo --fold-bn --int8 \\
      --calib-rec data/synth2d/train.rec --check-rec data/synth2d/test.rec
Outputs OUT-symbol.json + OUT-0000.params (plus OUT-folded-*, OUT-winograd-*, OUT-mkldnn-*, OUT-int8-*,
OUT.onnx when asked).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from ..errors import AlignError
from ..fileio import atomic_write, output_folder_problem
from .common import HelpFormatter


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--prefix", required=True, help="checkpoint prefix to export (PREFIX-symbol.json, PREFIX-EPOCH.params)")
    p.add_argument("--epoch", type=int, required=True, help="checkpoint epoch/step to export")
    p.add_argument("--out", required=True, help="output prefix for the deploy checkpoint")
    p.add_argument("--dcn-impl", choices=["native", "portable", "fast"], default=None,
                   help="deformable convolution in the exported graph (default: portable, stock operators; "
                        "fast with --cpu-ops; native = MXNet's op, the choice for GPUs)")
    p.add_argument("--cpu-ops", action="store_true",
                   help="use this project's compiled CPU operators (fast DCN, fused means): ~2x faster on "
                        "CPU; loaders must mx.library.load(insightface_align.symbols.ext.library_path()) first")
    p.add_argument("--fold-bn", action="store_true", help="also write OUT-folded: BatchNorm folded into convs")
    p.add_argument("--winograd", action="store_true",
                   help="also write OUT-winograd, the fastest fp32 CPU graph: BN folded, dense 3x3 convolutions as "
                        "Winograd (sdu_wino_conv), depthwise ones as sdu_dw_conv, 2x2 deconvolutions as "
                        "sdu_deconv2x2; inference only; needs the compiled operator library")
    p.add_argument("--mkldnn", action="store_true", help="also write OUT-mkldnn: MKLDNN-fused graph (CPU only)")
    p.add_argument("--int8", action="store_true", help="also write OUT-int8: MKLDNN INT8 quantised graph")
    p.add_argument("--int8-dcn-fp32", action="store_true",
                   help="with --int8: keep the deformable units' GEMMs in fp32 (slower; default: quantised)")
    p.add_argument("--calib-rec", default=None, help="records for INT8 calibration (required with --int8)")
    p.add_argument("--num-calib", type=int, default=320, help="calibration images")
    p.add_argument("--onnx", action="store_true", help="also write OUT.onnx (graphs without deformable convs)")
    p.add_argument("--check-rec", default=None, help="test set: print NME of each export beside the original")
    return p.parse_args(argv)


def load_images(rec: str, count: int, input_size: int = 128, heatmap_size: int = 64,
                convention: str = "centred") -> np.ndarray:
    """The first `count` validation crops of a packed set, (N, 3, in, in) RGB 0..255."""
    from ..data.config import DataConfig
    from ..data.iterator import AlignIter

    cfg = DataConfig(batch_size=16, input_size=input_size, heatmap_size=heatmap_size, train=False, shuffle=False,
                     num_workers=0, last_batch="discard", convention=convention)
    out = []
    with AlignIter(rec, cfg, copy=True) as it:
        for batch in it:
            out.append(batch.data[0].asnumpy())
            if sum(len(o) for o in out) >= count:
                break
    if not out:
        raise AlignError(f"{rec}: fewer than 16 records, cannot calibrate")
    return np.concatenate(out)[:count]


def check_nme(label: str, sym, arg, aux, rec: str, convention: str = "centred") -> dict:
    from ..data.config import DataConfig
    from ..evaluate import nme_of_rec
    from ..metrics import default_normaliser
    from ..model import HeatmapModel

    model = HeatmapModel(sym, arg, aux, batch_size=16, convention=convention)
    cfg = DataConfig(batch_size=16, input_size=model.input_size, heatmap_size=model.heatmap_size, train=False,
                     shuffle=False, num_workers=0, last_batch="pad", convention=convention)
    norm = default_normaliser(rec.rsplit("/", 1)[-1])
    nme, errors = nme_of_rec(model, rec, cfg, norm)
    return {"export": label, "nme": nme, "images": int(len(errors)), "normaliser": norm}


def main(argv=None) -> int:
    args = parse_args(argv)
    from .. import export as ex

    try:
        problem = output_folder_problem(os.path.dirname(args.out) or ".", "the folder of --out")
        if problem:
            raise AlignError(problem)
        if args.int8 and not args.calib_rec:
            raise AlignError("--int8 needs --calib-rec (images to calibrate the INT8 ranges on)")
        sym, arg, aux = ex.deploy_graph(args.prefix, args.epoch, args.dcn_impl, args.cpu_ops)
        config = ex.source_config(args.prefix, args.epoch)  # written beside every form (OUT-0000.json)
        ex.save_deploy(args.out, sym, arg, aux, config=config)
        written = {"deploy": (args.out, sym, arg, aux)}
        print(f"wrote {args.out}-symbol.json / {args.out}-0000.params (inference only"
              + (", needs the compiled operator library)" if args.cpu_ops else ", stock MXNet operators)"))
        fsym, farg, faux = sym, arg, aux
        if args.fold_bn or args.winograd or args.mkldnn or args.int8:
            fsym, farg, faux, n = ex.fold_batchnorm(sym, dict(arg), dict(aux))
            if args.fold_bn:
                ex.save_deploy(args.out + "-folded", fsym, farg, faux, config=config, graph="folded")
                written["folded"] = (args.out + "-folded", fsym, farg, faux)
                print(f"wrote {args.out}-folded: {n} BatchNorms folded into convolutions")
        if args.winograd:
            wsym, warg, waux, n = ex.fast_cpu_convolutions(fsym, farg, faux)
            ex.save_deploy(args.out + "-winograd", wsym, warg, waux, config=config, graph="winograd")
            written["winograd"] = (args.out + "-winograd", wsym, warg, waux)
            print(f"wrote {args.out}-winograd: {n['sdu_wino_conv']} 3x3 convolutions as Winograd, "
                  f"{n['sdu_dw_conv']} depthwise ones as plain-layout stencils, {n['sdu_deconv2x2']} deconvolutions "
                  "as GEMMs (needs the compiled operator library)")
        if args.mkldnn:
            msym = ex.mkldnn_graph(fsym)
            ex.save_deploy(args.out + "-mkldnn", msym, farg, faux, config=config, graph="mkldnn")
            written["mkldnn"] = (args.out + "-mkldnn", msym, farg, faux)
            print(f"wrote {args.out}-mkldnn (loads on MKLDNN builds of MXNet only)")
        if args.int8:
            images = load_images(args.calib_rec, args.num_calib, convention=config["convention"])
            qsym, qarg, qaux = ex.quantize_int8(fsym, farg, faux, images, quantize_taps=not args.int8_dcn_fp32)
            ex.save_deploy(args.out + "-int8", qsym, qarg, qaux, config=config, graph="int8")
            written["int8"] = (args.out + "-int8", qsym, qarg, qaux)
            ops = [n["op"] for n in json.loads(qsym.tojson())["nodes"]]
            cabs, units, ups = (ops.count(op) for op in ("sdu_cab_q", "sdu_deform_unit_q", "sdu_deconv2x2_q"))
            print(f"wrote {args.out}-int8 (calibrated on {len(images)} images of {args.calib_rec}"
                  + (f"; {cabs} CABs, {units} deformable units and {ups} deconvolutions as INT8 project operators"
                     if cabs or units or ups else "") + ")")
        if args.onnx:
            path = ex.export_onnx(sym, arg, aux, args.out + ".onnx")
            print(f"wrote {path}")
        if args.check_rec:
            rows = [check_nme(k, s, a, x, args.check_rec, config["convention"]) for k, (_, s, a, x) in written.items()]
            base = rows[0]["nme"]
            print("| export | NME (%) | change vs deploy |\n|---|---|---|")
            for r in rows:
                print(f"| {r['export']} | {100 * r['nme']:.3f} | {100 * (r['nme'] / base - 1):+.2f}% |")
            atomic_write(args.out + "-check.json", json.dumps(rows, indent=1), "w")
    except (AlignError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
