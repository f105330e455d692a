"""The Module trainer: Nadam, step schedule, checkpoints, resume, validation NME, logs.

One Trainer = one process (one worker in distributed runs). Data flows
AlignIter -> Module(forward_backward, update) -> checkpoint -> validation metrics.
The training graph runs on the operators chosen for the devices (symbols/backend.py:
on a CPU, this project's compiled ones); the checkpoints' -symbol.json is the same
network on the release's stock operators, so it loads in plain MXNet anywhere.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import mxnet as mx
import numpy as np
from tqdm import tqdm

from . import checkpoint as ckpt
from .data.config import DataConfig
from .data.iterator import AlignIter
from .data.photometric import Photometric
from .errors import AlignError, ConfigError, DataError
from .evaluate import nme_of_rec
from .geometry import CONVENTIONS, DEFAULT_CONVENTION
from .losses import LossConfig, label_names, training_symbol
from .metrics import default_normaliser
from .model import HeatmapModel
from .optimizer_states import load_states
from .recipe import Recipe
from .train_config import TrainConfig  # noqa: F401  (re-exported: train.TrainConfig)
from .symbols.backend import RELEASE, Backend, choose
from .symbols.network import build_heatmaps, get_symbol

LOG = logging.getLogger(__name__)
XAVIER = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


class TrainingDiverged(AlignError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


@dataclass
class RunSpec:
    """Where data comes from and where results go, for one training run."""

    train_rec: str
    out_dir: str
    val_recs: dict = field(default_factory=dict)      # name -> .rec path
    contexts: list = field(default_factory=lambda: [mx.cpu()])
    kvstore: str = "local"
    resume: bool = False
    pretrained: tuple | None = None                   # (prefix, epoch)
    freeze_bn: bool = False
    progress: bool = True
    dcn_impl: str | None = None                       # operators of the training graph; None/"auto":
    mean_impl: str | None = None                      # chosen for the contexts (symbols/backend.py)
    trust_pickled_states: bool = False                # resume from an older, pickled .states file
    reset_optimizer: bool = False                     # resume without the optimizer's states


def data_config(recipe: Recipe, loss: LossConfig, batch_size: int, train: bool, seed: int, num_workers: int,
                shard=(0, 1)) -> DataConfig:
    """The iterator's config from a recipe's data section."""
    d = recipe.data
    net = recipe.network
    pairs = loss.coherent if (train and loss.uses_pairs) else None
    kwargs = dict(batch_size=batch_size, input_size=net.input_size, heatmap_size=net.heatmap_size,
                  sigma=float(d.get("sigma", 1.0)), label_mode=loss.label_mode if train else "heatmap",
                  convention=d.get("convention", DEFAULT_CONVENTION), occluded_sigma=d.get("occluded_sigma"),
                  train=train, seed=seed, num_workers=num_workers, shard=tuple(shard),
                  shuffle=train)
    if train:
        kwargs.update(rotate=float(d.get("rotate", 40)), scale=tuple(d.get("scale", (0.8, 1.2))),
                      flip=bool(d.get("flip", True)), pairs=pairs,
                      translate=float(d.get("translate", 0.0)),
                      photometric=Photometric.from_dict(d.get("photometric")))
    return DataConfig(**kwargs)


def loss_config(recipe: Recipe) -> LossConfig:
    values = dict(recipe.loss)
    values.setdefault("sigma", float(recipe.data.get("sigma", 1.0)))
    return LossConfig.from_dict(values)


def freeze_batchnorm(sym):
    """The same graph with every BatchNorm using its running statistics (use_global_stats)."""
    graph = json.loads(sym.tojson())
    for node in graph["nodes"]:
        if node["op"] == "BatchNorm":
            node.setdefault("attrs", {})["use_global_stats"] = "True"
    return mx.sym.load_json(json.dumps(graph))


def recipe_symbol(recipe: Recipe, backend: Backend = RELEASE, freeze_bn: bool = False, ctx=None):
    """A recipe's training graph (heatmap heads, loss heads) on `backend`; with the default,
    RELEASE, it is what checkpoints store as -symbol.json."""
    net = recipe.network
    sym = training_symbol(build_heatmaps(net, ctx=ctx, backend=backend), loss_config(recipe), net.heatmap_size)
    return freeze_batchnorm(sym) if freeze_bn else sym


class Trainer:
    """Trains one recipe; `run()` returns the final validation metrics."""

    def __init__(self, recipe: Recipe, train_cfg: TrainConfig, spec: RunSpec, step_callback=None):
        self.recipe, self.cfg, self.spec = recipe, train_cfg, spec
        self.loss_cfg = loss_config(recipe)
        self.convention = recipe.data.get("convention", DEFAULT_CONVENTION)  # recorded in every checkpoint
        if self.convention not in CONVENTIONS:
            raise ConfigError("data.convention", f"must be one of {', '.join(CONVENTIONS)}, got {self.convention!r}")
        self.prefix = str(Path(spec.out_dir) / "model")
        self.step_callback = step_callback
        self.stop_requested = False
        self.kv = mx.kv.create(spec.kvstore) if spec.kvstore.startswith("dist") else None
        self.rank, self.num_workers = (self.kv.rank, self.kv.num_workers) if self.kv else (0, 1)
        self.devices = list(spec.contexts)
        self.backend = choose(self.devices, spec.dcn_impl, spec.mean_impl)
        self._stock_symbol = None
        self.batch_size = train_cfg.batch_per_device * len(self.devices)
        self.history = []
        self.seen_ids = []
        os.makedirs(spec.out_dir, exist_ok=True)

    # -- graph and module ------------------------------------------------------------------
    def _symbol(self, backend: Backend | None = None):
        """The training graph on `backend` (default: the one chosen for the devices)."""
        return recipe_symbol(self.recipe, backend or self.backend, self.spec.freeze_bn, ctx=self.devices)

    def _saved_symbol(self):
        """What checkpoints store as -symbol.json: the training graph on the release's
        stock operators (same parameters), built once."""
        if self._stock_symbol is None:
            self._stock_symbol = self._symbol(RELEASE)
        return self._stock_symbol

    def _optimizer_params(self) -> dict:
        sched = mx.lr_scheduler.MultiFactorScheduler(step=list(self.cfg.lr_steps), factor=self.cfg.lr_factor,
                                                     base_lr=self.cfg.lr) if self.cfg.lr_steps else None
        # Each device's loss is a mean over its own rows; summed gradients are rescaled to the mean.
        return {"learning_rate": self.cfg.lr, "wd": self.cfg.wd, "lr_scheduler": sched,
                "rescale_grad": 1.0 / (len(self.devices) * self.num_workers)}

    def _module(self, train_iter):
        mod = mx.mod.Module(self._symbol(), data_names=["data"], label_names=label_names(self.loss_cfg),
                            context=self.devices)
        mod.bind(data_shapes=train_iter.provide_data, label_shapes=train_iter.provide_label, for_training=True)
        return mod

    def _init_params(self, mod):
        mx.random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)
        arg, aux = None, None
        if self.spec.pretrained:
            arg, aux = ckpt.load_params(*self.spec.pretrained)
            known = set(mod._param_names) | set(mod._aux_names)
            LOG.info("pretrained %s: %d of %d tensors match this graph", self.spec.pretrained[0],
                     len((set(arg) | set(aux)) & known), len(known))
        mod.init_params(XAVIER, arg_params=arg, aux_params=aux, allow_missing=True, allow_extra=True)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        start_step, state = 0, {}
        if self.spec.resume:
            need_states = not self.spec.reset_optimizer
            last, skipped = ckpt.resumable_step(self.prefix, need_states)
            for problem in skipped:
                LOG.warning("not resuming from a damaged checkpoint: %s", problem)
            if last is not None:
                if skipped:
                    LOG.warning("resuming from step %d, the newest intact checkpoint", last)
                start_step, state = last, ckpt.load_state(self.prefix, last)
        dcfg = data_config(self.recipe, self.loss_cfg, self.batch_size, True, self.cfg.seed, self.cfg.num_workers,
                           shard=(self.rank, self.num_workers))
        first = AlignIter(self.spec.train_rec, dcfg)
        per_epoch = first.num_batches
        first.close()
        if per_epoch == 0:
            raise ConfigError("train.batch_per_device", f"{self.spec.train_rec} has fewer records than one batch")
        epoch, skip = divmod(start_step, per_epoch)
        self.first_epoch = epoch
        train_iter = AlignIter(self.spec.train_rec, replace(dcfg, epoch=epoch, skip_batches=skip))
        mod = self._module(train_iter)
        if start_step:
            arg, aux = ckpt.load_params(self.prefix, start_step)
            mod.init_params(XAVIER, arg_params=arg, aux_params=aux, allow_missing=False)
        else:
            self._init_params(mod)
        mod.init_optimizer(kvstore=self.kv or self.spec.kvstore, optimizer=self.cfg.optimizer,
                           optimizer_params=self._optimizer_params())
        if start_step:
            self._restore_optimizer(mod, start_step)
        self.history = state.get("history", [])
        return self._loop(mod, train_iter, start_step)

    def _loop(self, mod, train_iter, step) -> dict:
        n_stack = self.recipe.network.stacks
        handlers = self._install_signal_handlers()
        bar = tqdm(total=self.cfg.max_steps, initial=step, desc="train", disable=not self.spec.progress,
                   dynamic_ncols=True)
        last_metrics, window, tick = {}, [], time.time()
        try:
            while step < self.cfg.max_steps and not self.stop_requested:
                try:
                    batch = train_iter.next()
                except StopIteration:
                    train_iter.reset()
                    continue
                mod.forward_backward(batch)
                mod.update()
                step += 1
                if train_iter.epoch == self.first_epoch and len(self.seen_ids) < 4096:
                    self.seen_ids.extend(int(i) for i in batch.record_id[:len(batch.record_id) - batch.pad])
                outs = mod.get_outputs()
                losses = [float(o.asnumpy().mean()) for o in outs[:-1]]
                if not all(math.isfinite(v) for v in losses):
                    raise TrainingDiverged(f"loss became {losses} at step {step}; the last good checkpoint "
                                           f"({self.prefix}-{ckpt.latest_step(self.prefix)}) is kept")
                if self.cfg.max_loss is not None and sum(losses[:n_stack]) > self.cfg.max_loss:
                    raise TrainingDiverged(f"loss {sum(losses[:n_stack]):.4g} at step {step} is over train.max_loss "
                                           f"({self.cfg.max_loss:g}); the last good checkpoint "
                                           f"({self.prefix}-{ckpt.latest_step(self.prefix)}) is kept")
                window.append(losses)
                bar.update(1)
                if step % self.cfg.log_every == 0 or step == self.cfg.max_steps:
                    self._log(mod, step, window, time.time() - tick, n_stack)
                    bar.set_postfix(loss="%.4f" % sum(np.mean(window, axis=0)[:n_stack]))
                    window, tick = [], time.time()
                if self.rank == 0 and self.spec.val_recs and (step % self.cfg.val_every == 0 or step == self.cfg.max_steps):
                    last_metrics = self.validate(mod)
                    self._write_log({"step": step, "val": last_metrics})
                saved = step % self.cfg.checkpoint_every == 0 or step == self.cfg.max_steps
                if saved:
                    self._save(mod, step, train_iter)
                if self.step_callback:  # after the save: a test hook may corrupt state or raise signals
                    self.step_callback(self, step, mod)
                if self.stop_requested and not saved:
                    self._save(mod, step, train_iter)
        finally:
            bar.close()
            train_iter.close()
            self._restore_signal_handlers(handlers)
        if self.stop_requested:
            LOG.warning("stopped by signal at step %d; checkpoint saved", step)
        if self.kv is not None:
            ckpt.atomic_write(str(Path(self.spec.out_dir) / ("worker-%d.json" % self.rank)), json.dumps(
                {"rank": self.rank, "num_workers": self.num_workers, "record_ids": sorted(set(self.seen_ids))}), "w")
        self._plot()
        return {"step": step, "val": last_metrics, "stopped": self.stop_requested}

    # -- pieces ------------------------------------------------------------------------------
    def validate(self, mod) -> dict:
        net = self.recipe.network
        batch = max(1, min(32, self.batch_size))
        arg, aux = mod.get_params()
        model = HeatmapModel(get_symbol(net, ctx=self.devices[0], backend=self.backend), arg, aux,
                             [self.devices[0]], batch, net.input_size, convention=self.convention)
        results = {}
        for name, rec in self.spec.val_recs.items():
            vcfg = DataConfig(batch_size=batch, input_size=net.input_size, heatmap_size=net.heatmap_size,
                              train=False, shuffle=False, num_workers=0, last_batch="pad",
                              convention=self.convention)
            norm = default_normaliser(name)
            nme, errors = nme_of_rec(model, rec, vcfg, norm, self.cfg.decoder)
            results[name] = {"nme": nme, "normaliser": norm, "count": int(len(errors))}
        return results

    def _log(self, mod, step, window, seconds, n_stack):
        mean = np.mean(window, axis=0)
        entry = {"step": step, "lr": mod._optimizer.learning_rate if mod._optimizer else None,
                 "loss": float(sum(mean[:n_stack])), "stack_losses": [float(v) for v in mean[:n_stack]],
                 "samples_per_s": len(window) * self.batch_size / max(seconds, 1e-9)}
        if len(mean) > n_stack:
            entry["coherent_loss"] = float(mean[n_stack])
        self.history.append({"step": step, "loss": entry["loss"]})
        self._write_log(entry)

    def _write_log(self, entry):
        if self.rank == 0:
            with open(Path(self.spec.out_dir) / "train_log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")

    @staticmethod
    def _updater(mod):
        """The updater holding the optimizer states: the module's, or the local kvstore's when
        it updates there; None for a dist kvstore (states live on the servers)."""
        if mod._update_on_kvstore and mod._kvstore is not None:
            return None if mod._kvstore.type.startswith("dist") else mod._kvstore._updater
        return mod._updater

    def _restore_optimizer(self, mod, step):
        path = "%s-%04d.states" % (self.prefix, step)
        updater = self._updater(mod)
        if self.spec.reset_optimizer or updater is None:
            LOG.warning("resuming step %d with a fresh optimizer (%s)", step,
                        "--reset-optimizer" if self.spec.reset_optimizer else "states live on the kvstore servers")
            return
        if not os.path.exists(path):
            raise DataError(path, "the optimizer states of this checkpoint are missing; resume with "
                                  "--reset-optimizer to start the optimizer afresh (the loss jumps for a while)")
        load_states(path, updater, trust_pickle=self.spec.trust_pickled_states)

    def _save(self, mod, step, train_iter):
        """Checkpoint `step` (rank 0 only), with the graph on stock operators (_saved_symbol)."""
        if self.rank != 0:
            return
        mx.nd.waitall()  # every pending update and BatchNorm statistic lands before the copy
        arg, aux = mod.get_params()
        bad = [name for name, value in list(arg.items()) + list(aux.items())
               if not np.all(np.isfinite(value.asnumpy()))]
        if bad:
            raise TrainingDiverged(f"{len(bad)} parameter or statistic tensors are not finite at step {step} "
                                   f"(first: {bad[0]}); not saved, the last good checkpoint "
                                   f"({self.prefix}-{ckpt.latest_step(self.prefix)}) is kept")
        ckpt.save_checkpoint(self.prefix, step, self._saved_symbol(), arg, aux, self._updater(mod),
                             {"epoch": train_iter.epoch, "batches_done": train_iter.batches_done,
                              "recipe": self.recipe.name, "network": self.recipe.network.to_dict(),
                              "heatmap_loss": self.loss_cfg.heatmap,
                              "convention": self.convention,
                              "history": self.history})
        if self.cfg.keep_checkpoints:
            for old in ckpt.prune_checkpoints(self.prefix, self.cfg.keep_checkpoints):
                LOG.info("removed checkpoint %s-%04d (train.keep_checkpoints %d)", self.prefix, old,
                         self.cfg.keep_checkpoints)

    def _plot(self):
        if self.rank != 0 or not self.history:
            return
        try:
            from .plots import plot_training_curves

            plot_training_curves(Path(self.spec.out_dir) / "train_log.jsonl", Path(self.spec.out_dir) / "curves.png")
        except ImportError:  # matplotlib missing: the JSON log still has every number
            LOG.warning("matplotlib unavailable: no training curves PNG")

    def _install_signal_handlers(self):
        def request_stop(signum, _frame):
            LOG.warning("signal %d: finishing this step, saving a checkpoint, then exiting", signum)
            self.stop_requested = True

        try:
            return {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: signals stay with the caller
            return {}

    @staticmethod
    def _restore_signal_handlers(handlers):
        for s, h in handlers.items():
            signal.signal(s, h)
