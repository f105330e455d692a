"""End to end on the embedded default: synthetic faces -> packer -> iterator -> trainer -> NME.

A tiny network (width 0.125, 64x64 input) must cut the synthetic test NME by a large
factor (3x) within the suite's time budget, measured against the same network after its
first update (practically its initialisation).
"""
import numpy as np

from insightface_align.datasets.w300 import W300Reader
from insightface_align.pack import pack_dataset
from insightface_align.recipe import load_recipe
from insightface_align.synthetic.dataset import generate_folder
from insightface_align.synthetic.generate import SynthConfig
from insightface_align.train import RunSpec, TrainConfig, Trainer


def test_training_on_synthetic_faces_cuts_nme(tmp_path):
    cfg = SynthConfig(mode="2d", size=192)
    generate_folder(str(tmp_path / "raw" / "train"), 320, seed=11, config=cfg, workers=2)
    generate_folder(str(tmp_path / "raw" / "test"), 48, seed=12, config=cfg, workers=2)
    for split in ("train", "test"):
        pack_dataset(W300Reader([str(tmp_path / "raw" / split)]), str(tmp_path / "data"), split, workers=2,
                     progress=False)
    recipe = load_recipe("sdu-nodcn", multiplier=0.125, input_size=64, heatmap_size=32)
    # The release's spatial-softmax loss: it converges far faster than sigmoid CE in a short schedule.
    recipe = recipe.__class__(**{**recipe.__dict__, "loss": dict(recipe.loss, heatmap="softmax_ce")})
    trainer = Trainer(recipe, TrainConfig(max_steps=90, batch_per_device=16, lr=0.002, lr_steps=(70,),
                                          val_every=1000, checkpoint_every=1000, num_workers=1, seed=1),
                      RunSpec(str(tmp_path / "data" / "train.rec"), str(tmp_path / "run"),
                              {"test": str(tmp_path / "data" / "test.rec")}, progress=False))
    untrained = {}

    def measure_untrained(t, step, mod):
        if step == 1 and not untrained:
            untrained.update(t.validate(mod))

    trainer.step_callback = measure_untrained
    result = trainer.run()
    before, after = untrained["test"]["nme"], result["val"]["test"]["nme"]
    assert after < before / 3, f"NME {before:.3f} -> {after:.3f}"
    assert np.isfinite(after) and result["val"]["test"]["count"] == 48
