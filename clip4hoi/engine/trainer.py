"""The training engine of ``clip4hoi train``: one experiment from start (or a checkpoint)
to its last epoch, on one process or many (DDP, launched by ``torchrun``).

Per optimiser step: ``accumulation_steps`` micro-batches of ``batch_size / (world_size ·
accumulation_steps)`` images per process; the frozen DETR and CLIP (or the feature
cache) and the proposals of every micro-batch first, then the prompts through the text
encoder once (sharded over the ranks), then the head's forward and backward per
micro-batch, with the losses normalised by the positives of the whole step; AdamW over
the trainable parameters (no weight decay on biases, norms, prompts and logit scales);
gradient-norm clipping; a per-step LR schedule; bf16 autocast on recent GPUs (fp16 with
loss scaling on older ones). DDP wraps the trainable head only. At every epoch end (and
every ``checkpoint_every`` steps) a checkpoint; at the end (and every ``eval_every``
epochs when asked) an evaluation on the test set with the project's evaluator;
``metrics.jsonl`` gets one line per ``log_every`` steps (losses, pairs and positives per
step, gradient norm, learning rate, speed) and one per evaluation. A non-finite loss or
gradient stops the run before the update; so do ``max_steps_without_positives`` steps
without a positive pair.

Reproducibility: the model is initialised from ``seed``; the data order and augmentation
come from :mod:`clip4hoi.engine.data`; the training RNG (dropout) is seeded per rank and
saved in every checkpoint, so a resumed run continues bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from clip4hoi.config import LEGACY_DEFAULTS
from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.engine.checkpoint import (
    CheckpointManager,
    check_state,
    load_head,
    load_state,
    read_checkpoint,
    resolve_resume,
    rng_state,
    seed_everything,
    set_rng_state,
)
from clip4hoi.engine.config import ExperimentConfig, TrainConfig, dump_experiment
from clip4hoi.engine.data import (
    ResumableSampler,
    build_dataset,
    configure_model,
    inputs_to_device,
    to_device,
    train_loader,
)
from clip4hoi.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_gather_rows,
    all_reduce_sum,
    init_distributed,
)
from clip4hoi.engine.evaluate import evaluate_model
from clip4hoi.engine.feature_cache import CachedFeatures, build_cache, fill_cache
from clip4hoi.errors import InputError, worded
from clip4hoi.fileio import environment_fault, folder_lock, sweep_temp_files, write_atomic
from clip4hoi.models.model import (
    CLIP4HOI,
    FrozenFeatures,
    Proposals,
    build_model,
)
from clip4hoi.models.precision import amp_dtype, autocast


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss or gradient, no positive pair)."""


STEP_STATS = ("loss_pair", "loss_global", "pairs", "positives", "grad_norm")
"""What :meth:`Trainer.train_step` returns per optimiser step (over all ranks; ``pairs``
and ``positives`` are the step's pairs and positive pair labels; ``grad_norm`` before
clipping). ``metrics.jsonl`` logs their means per step over ``log_every`` steps."""


def average_gradients(tensors: list[Tensor], info: DistInfo) -> None:
    """Average the ``.grad`` of ``tensors`` over the ranks (one all-reduce), as DDP does."""
    if not info.distributed:
        return
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]
    flat = all_reduce_sum(torch.cat([g.flatten() for g in grads])) / info.world_size
    for t, chunk in zip(tensors, flat.split([g.numel() for g in grads]), strict=True):
        t.grad = chunk.view_as(t).to(t.dtype)


class HeadStep(nn.Module):
    """The trainable head's loss on one micro-batch whose frozen part (features,
    :class:`Proposals`) and class embeddings are given: the module that DDP wraps (DDP
    only hooks ``forward``). DDP ignores the frozen DETR and CLIP (no broadcast, no
    buffers) and the prompt vectors, whose gradient the trainer reduces itself after the
    one text-encoder backward of the step (:meth:`Trainer.train_step`)."""

    def __init__(self, model: CLIP4HOI) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: FrozenFeatures, proposals: Proposals, text: Tensor,
                normalizer: Tensor) -> dict[str, Tensor]:
        log_scores, global_logits = self.model.score(features, proposals, text)
        return self.model._losses(proposals, log_scores, global_logits, normalizer)

    def names_ddp_ignores(self) -> list[str]:
        """Frozen parameters and buffers, and the prompt vectors (see the class doc)."""
        prompts = {id(t) for t in prompt_tensors(self.model)}
        names = [name for name, p in self.named_parameters()
                 if not p.requires_grad or id(p) in prompts]
        return names + [name for name, _ in self.named_buffers()]


def prompt_tensors(model: CLIP4HOI) -> list[Tensor]:
    """The learnable prompt vectors (none when ``head.learn_prompts`` is off)."""
    classifier = model.classifier
    return [t for t in (classifier.prefix, classifier.conjunction) if t.requires_grad]


def parameter_groups(model: CLIP4HOI, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on the weight matrices only; none on biases, norms,
    prompt vectors and the logit scales and biases (as DETR / CLIP fine-tuning)."""
    prompts = {id(t) for t in prompt_tensors(model)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or id(p) in prompts else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def encode_prompts(model: CLIP4HOI, classes: HOIClassSet, info: DistInfo) -> Tensor:
    """Class embeddings ``[K, E]`` with gradient to the prompts, each rank encoding a
    ``1 / world_size`` share of the classes (a differentiable all-gather joins them: the
    backward pass gives each rank the gradient of all ranks' losses for its share)."""
    classifier, clip = model.classifier, model.clip
    if not info.distributed:
        return classifier.prompt_embeddings(clip, classes)
    total = len(classes)
    share = -(-total // info.world_size)
    rows = slice(min(info.rank * share, total), min((info.rank + 1) * share, total))
    local = classifier.prompt_embeddings(clip, classes, rows) if rows.stop > rows.start \
        else classifier.pair_proj.weight.new_zeros(0, clip.embed_dim)
    local = torch.cat([local, local.new_zeros(share - len(local), local.shape[1])])
    return all_gather_rows(local)[:total]


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based)."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "step":
        epoch = step // steps_per_epoch
        return warmup * cfg.lr_gamma ** sum(epoch >= e for e in cfg.lr_drop_epochs)
    if cfg.lr_schedule == "cosine":
        return warmup * 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))
    return warmup


def best_metric_name(config: ExperimentConfig) -> str:
    """The evaluation key that selects ``best.safetensors``."""
    if config.train.best_metric != "auto":
        return config.train.best_metric
    if config.data.dataset == "vcoco":
        return "role_scenario_2"
    data = config.data
    zero_shot = data.zero_shot or data.unseen_classes or data.unseen_verbs or data.unseen_objects
    return "unseen" if zero_shot else "full"


class Trainer:
    """Builds everything of an experiment (datasets first, so that missing files fail at
    once), then :meth:`fit` trains it. ``resume``: a checkpoint or run folder, ``True``
    for the latest checkpoint of the run if there is one, or None for a fresh run.
    ``label``: how its printed lines call a setting (:func:`~clip4hoi.errors.worded`)."""

    def __init__(self, config: ExperimentConfig, info: DistInfo | None = None,
                 resume: str | Path | bool | None = None,
                 label: Callable[[str], str] = str) -> None:
        self.config, self.label = config, label
        self.info = info or init_distributed(config.train.device)
        cfg, info = config.train, self.info
        self.output_dir = config.output_dir
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints",
                                             cfg.keep_checkpoints)
        resume_from = self._resume_files(resume)
        self.train_set = build_dataset(config.data, train=True)
        self.test_set = build_dataset(config.data, train=False)
        setup = configure_model(config, self.train_set, self.test_set)  # custom data
        if setup and info.is_main:
            print(f"clip4hoi train: {setup}")
        if resume_from is not None:   # a corrupt checkpoint fails before the model is built
            weights, state_file = resume_from
            head = read_checkpoint(weights)[1]
            state = load_state(state_file)
            check_state(state, state_file)
            self._check_resumed_config(state, state_file)

        per_step = info.world_size * cfg.accumulation_steps
        if cfg.batch_size % per_step:
            raise ValueError(f"train.batch_size={cfg.batch_size} is not a multiple of "
                             f"world size × accumulation steps = {per_step}")
        self.micro_batch = cfg.batch_size // per_step

        seed_everything(cfg.seed)       # the same initial weights on every rank
        self.model = build_model(config.model).to(info.device)
        head_step = HeadStep(self.model)
        self.step_module: nn.Module = head_step
        if info.distributed:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                head_step, head_step.names_ddp_ignores())
            self.step_module = DistributedDataParallel(
                head_step, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters, broadcast_buffers=False)
        self.amp = amp_dtype(cfg.amp, info.device)
        # fp16 needs loss scaling; bf16 has fp32's range.
        self.scaler = torch.amp.GradScaler(info.device.type,
                                           enabled=self.amp == torch.float16)

        self.cache = build_cache(config.feature_cache, self.model, config.data.transform,
                                 self.amp)
        source = self.train_set
        if self.cache is not None and not config.data.transform.augment:
            fill_cache(self.model, self.train_set, self.cache, info, config.data.num_workers,
                       desc="cache training features", amp=self.amp)
            source = CachedFeatures(self.train_set, self.cache)
        self.sampler = ResumableSampler(len(self.train_set), cfg.seed, info.rank,
                                        info.world_size)
        self.loader = train_loader(source, self.sampler, self.micro_batch,
                                   config.data.num_workers)
        self.micro_batches_per_epoch = math.ceil(len(self.sampler) / self.micro_batch)
        self.steps_per_epoch = math.ceil(self.micro_batches_per_epoch / cfg.accumulation_steps)
        total = cfg.max_steps or cfg.epochs * self.steps_per_epoch

        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = AdamW(parameter_groups(self.model, cfg.weight_decay), lr=cfg.lr)
        self.scheduler = LambdaLR(self.optimizer, lambda step: lr_factor(
            step, cfg, self.steps_per_epoch, total))
        self.epoch = self.batches_done = self.step = self.steps_without_positives = 0
        self.best_metric = best_metric_name(config)
        self.best_value: float | None = None
        seed_everything(cfg.seed + 7919 * info.rank)  # the training RNG (dropout), per rank
        if resume_from is not None:
            self._load(weights, head, state_file, state)
        self._start_logs(resumed=resume_from is not None)

    # ----------------------------------------------------------------------- set-up

    def _say(self, text: str) -> None:
        """Print a line that names settings as ``{name}`` (:attr:`label` words them)."""
        print(worded(text, self.label))

    def _resume_files(self, resume: str | Path | bool | None) -> tuple[Path, Path] | None:
        if resume is True:
            latest = self.checkpoints.latest()
            if latest is None:
                if self.info.is_main:
                    self._say(f"{{resume}}: no checkpoint in {self.checkpoints.dir} yet, "
                              f"starting a fresh run")
                return None
            return resolve_resume(latest, self.output_dir)
        if resume:
            return resolve_resume(resume, self.output_dir)
        if self.checkpoints.latest() is not None:
            raise InputError(f"{self.output_dir} already holds checkpoints: pass {{resume}} to "
                             f"continue that run, or choose another {{output_dir}}")
        return None

    def _load(self, weights: Path, tensors: dict[str, Tensor], state_file: Path,
              state: dict[str, Any]) -> None:
        load_head(self.model, tensors, source=str(weights))
        expected = {"world_size": self.info.world_size, "micro_batch": self.micro_batch,
                    "seed": self.config.train.seed}
        changed = {k: (state[k], v) for k, v in expected.items() if state[k] != v}
        if changed:
            raise InputError(f"cannot resume {state_file} exactly: (checkpoint, now) differ "
                             f"for {changed}")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, TypeError, IndexError) as error:
            raise InputError(f"{{resume}}: the optimiser state in {state_file} does not fit "
                             f"this model ({error})") from error
        self.epoch, self.batches_done, self.step = (state["epoch"], state["batches_done"],
                                                    state["step"])
        self.best_value = state["best_value"]
        set_rng_state(state["rng"][self.info.rank])
        if self.info.is_main:
            print(f"resumed from {weights} (epoch {self.epoch}, step {self.step})")

    def _check_resumed_config(self, state: dict[str, Any], state_file: Path) -> None:
        """Refuse to resume with settings that change the training (``--set train.lr=...``);
        apply the ones that only change its length, logging or resources, and say so."""
        stored = state.get("config")
        if stored is None:      # checkpoints of older versions: the run's config.yaml
            run_config = state_file.parent.parent / "config.yaml"
            stored = run_config.read_text() if run_config.is_file() else None
        if stored is None:
            return
        before, now = _flatten(yaml.safe_load(stored)), _flatten(yaml.safe_load(
            dump_experiment(self.config)))
        # A run of an older version lacks the settings added since: it was trained with the
        # value of LEGACY_DEFAULTS where there is one, else with the default.
        defaults = _flatten(yaml.safe_load(dump_experiment(ExperimentConfig())))
        for key, value in {**defaults, **_flatten(LEGACY_DEFAULTS, "model.")}.items():
            before.setdefault(key, value)
        changes = {k: (before.get(k), now.get(k)) for k in sorted(before.keys() | now.keys())
                   if before.get(k) != now.get(k) and k not in RESUME_IGNORED}
        refused = {k: v for k, v in changes.items() if k not in RESUME_APPLIED}
        if refused:
            listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
            raise InputError(f"{{resume}}: {state_file} was trained with other settings "
                             f"({listed}); resuming would mix two runs: drop these "
                             f"overrides, or start a new run in another {{output_dir}}")
        if changes and self.info.is_main:
            listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
            self._say(f"{{resume}}: applying the changed settings {listed}")

    def _start_logs(self, resumed: bool) -> None:
        self.metrics_file = self.output_dir / "metrics.jsonl"
        self.writer = None
        if not self.info.is_main:
            return
        write_atomic(self.output_dir / "config.yaml", dump_experiment(self.config))
        lines = self.metrics_file.read_text(errors="replace").splitlines() if resumed and \
            self.metrics_file.is_file() else []
        # Lines logged after the checkpoint by an interrupted run are dropped, and so is a
        # line torn by a kill.
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                step = int(entry["step"])
            except (ValueError, TypeError, KeyError):
                self._say(f"{{resume}}: {self.metrics_file} line {number} is not a "
                          f"complete entry (torn by a kill?); dropped")
                continue
            if step <= self.step:
                kept.append(line)
        write_atomic(self.metrics_file, "".join(line + "\n" for line in kept))
        if self.config.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"))

    def _log(self, entry: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        try:
            with self.metrics_file.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
        except OSError as error:   # a full disk: name the file
            raise environment_fault(error, self.metrics_file) from error
        if self.writer is not None:
            for key, value in entry.items():
                if key not in ("epoch", "step") and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, entry["step"])

    # ------------------------------------------------------------------------ training

    def fit(self) -> Path:
        """Train until the last epoch (or ``max_steps``). Returns the output folder."""
        cfg = self.config.train
        while self.epoch < cfg.epochs and not self._done():
            self._train_epoch()
            if self.batches_done == self.micro_batches_per_epoch:   # the epoch is complete
                self.epoch, self.batches_done = self.epoch + 1, 0
                self._checkpoint(self._maybe_evaluate(
                    final=self.epoch == cfg.epochs or self._done()))
            elif self._done():                                      # max_steps, mid-epoch
                self._checkpoint(self._maybe_evaluate(final=True))
        if self.writer is not None:
            self.writer.close()
        return self.output_dir

    def _done(self) -> bool:
        return bool(self.config.train.max_steps) and self.step >= self.config.train.max_steps

    def _train_epoch(self) -> None:
        cfg, info = self.config.train, self.info
        self.model.train()
        self.sampler.set_epoch(self.epoch, start=self.batches_done * self.micro_batch)
        window: list[Tensor] = []
        images, started = 0, time.perf_counter()
        group: list[tuple[Any, list[dict]]] = []
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch",
                   initial=self.batches_done, total=self.micro_batches_per_epoch,
                   disable=not info.is_main, dynamic_ncols=True)
        for batch in bar:
            group.append(batch)
            last = self.batches_done + len(group) == self.micro_batches_per_epoch
            if len(group) < cfg.accumulation_steps and not last:
                continue
            parts = self.train_step(group)
            self.batches_done += len(group)
            images += sum(len(targets) for _, targets in group) * info.world_size
            group = []
            window.append(parts)
            rate = images / (time.perf_counter() - started)
            if info.is_main:
                bar.set_postfix(loss=f"{float(parts[:2].sum()):.4f}", img_s=f"{rate:.1f}")
            if self.step % cfg.log_every == 0:
                self._log_window(window, rate)
                window = []
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self._checkpoint(None)
            if self._done():
                break
        bar.close()

    def train_step(self, group: list[tuple[Any, list[dict]]]) -> Tensor:
        """One optimiser step on the micro-batches ``group`` (``(inputs, targets)`` as the
        loader gives them): :meth:`accumulate_gradients`, clip, step. Stops with a
        :class:`TrainingError` on a non-finite loss or gradient, before the update, and
        when no pair was positive for ``train.max_steps_without_positives`` steps.
        Returns the step's statistics (:data:`STEP_STATS`, over all ranks)."""
        cfg = self.config.train
        stats = self.accumulate_gradients(group)
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, cfg.clip_grad_norm or math.inf)
        # The one host sync before the update: whether to apply it.
        values = dict(zip(STEP_STATS, torch.cat([stats, norm[None].float()]).tolist(),
                          strict=True))
        if not (math.isfinite(values["loss_pair"]) and math.isfinite(values["loss_global"])):
            raise self._stop("loss", values)
        if not math.isfinite(values["grad_norm"]) and not self.scaler.is_enabled():
            raise self._stop("gradient norm", values)   # fp16: the scaler skips the step
        try:
            self.scaler.step(self.optimizer)
        except RuntimeError as error:   # AdamW's step size overflows float32 (lr ~1e37)
            if "overflow" not in str(error):
                raise
            raise TrainingError(f"the optimiser step overflowed at epoch {self.epoch + 1}, "
                                f"step {self.step + 1}: train.lr={cfg.lr:g} is too large; the "
                                f"checkpoints in {self.checkpoints.dir} are intact") from None
        self.scaler.update()
        # A finite gradient can still blow the weights up (a huge learning rate): stop
        # before such weights reach a checkpoint. (Every rank holds the same weights, so
        # every rank decides alike.)
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.parameters]).all()):
            raise self._stop("weights after the optimiser step (is train.lr too large?)",
                             values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self._check_positives(values)
        return torch.tensor([values[k] for k in STEP_STATS])

    def accumulate_gradients(self, group: list[tuple[Any, list[dict]]]) -> Tensor:
        """The gradients of one optimiser step, accumulated in ``.grad`` (nothing applied).

        1. The frozen part of every micro-batch first (DETR and CLIP or the cache, then
           proposals and labels), so that the step's positive pair labels and image labels
           — summed over the micro-batches and all-reduced over the ranks — normalise every
           micro-batch's loss: the gradient is then the same however the step's images are
           split over ranks and micro-batches (as UPT normalises by the all-reduced count).
        2. The class embeddings once per step (each rank encodes a share), used as a
           detached leaf by every micro-batch; its accumulated gradient then goes back
           through the text encoder once, and the prompts' gradients are averaged over the
           ranks like DDP averages the others.

        Returns ``[loss_pair, loss_global, pairs, positives]`` of the step over all ranks
        (the losses as DDP's mean, the counts summed), on the device."""
        info = self.info
        model = self.model
        classes = self.train_set.class_set
        frozen = []
        for inputs, targets in group:
            inputs = inputs_to_device(inputs, info.device)
            device_targets = to_device(targets, info.device)
            sizes = [(int(t["size"][0]), int(t["size"][1])) for t in targets]
            with autocast(info.device, self.amp):
                features = inputs if isinstance(inputs, FrozenFeatures) else \
                    model.extract_features(inputs, classes)
                proposals = model.proposals(features, sizes, device_targets, classes)
            frozen.append((features, proposals))
        counts = all_reduce_sum(torch.stack([
            sum(p.labels.sum() for _, p in frozen), sum(p.image_labels.sum() for _, p in frozen),
        ]))                                                                   # [2]
        normalizer = counts.clamp(min=1) / info.world_size
        prompts = prompt_tensors(model)
        with autocast(info.device, self.amp):
            if prompts:
                encoded = encode_prompts(model, classes, info)
                text = encoded.detach().requires_grad_()
            else:
                with torch.no_grad():
                    text = model.classifier.text_embeddings(model.clip, classes)
        parts = torch.zeros(2, device=info.device)
        for k, (features, proposals) in enumerate(frozen):
            # DDP all-reduces the gradients on the group's last backward only.
            accumulate = k < len(frozen) - 1 and isinstance(self.step_module,
                                                            DistributedDataParallel)
            with self.step_module.no_sync() if accumulate else contextlib.nullcontext():
                with autocast(info.device, self.amp):
                    losses = self.step_module(features, proposals, text, normalizer)
                loss = torch.stack([losses["loss_pair"], losses["loss_global"]]).float()
                self.scaler.scale(loss.sum()).backward()
            parts += loss.detach()
        if prompts:
            encoded.backward(text.grad.to(encoded.dtype))
            average_gradients(prompts, info)
        pairs = float(sum(sum(p.counts) for _, p in frozen))
        local = torch.cat([parts / info.world_size, parts.new_tensor([pairs])])
        return torch.cat([all_reduce_sum(local), counts[:1]])

    def _check_positives(self, values: dict[str, float]) -> None:
        limit = self.config.train.max_steps_without_positives
        self.steps_without_positives = 0 if values["positives"] > 0 else \
            self.steps_without_positives + 1
        if limit and self.steps_without_positives >= limit:
            raise TrainingError(
                f"no proposal pair matched an annotated pair in the last {limit} optimiser "
                f"steps (train.max_steps_without_positives; at epoch {self.epoch + 1}, step "
                f"{self.step}): only the global loss is training. Likely causes: "
                f"model.detector.weights is not a detector for these images (or random), "
                f"its classes do not map to COCO-80 (80 classes in COCO-80 order or 91 COCO "
                f"ids), its proposals are cut by model.detector.score_threshold / max_*, the "
                f"annotations' boxes are not xyxy pixels, or model.loss.match_iou is too "
                f"high; model.loss.add_gt_boxes=true adds the annotated boxes to the "
                f"proposals")

    def _stop(self, what: str, values: dict[str, float]) -> TrainingError:
        return TrainingError(
            f"non-finite {what} at epoch {self.epoch + 1}, step {self.step + 1} (rank "
            f"{self.info.rank}: loss_pair={values['loss_pair']:.6g}, loss_global="
            f"{values['loss_global']:.6g}); the checkpoints in {self.checkpoints.dir} are "
            f"intact")

    def _log_window(self, window: list[Tensor], rate: float) -> None:
        stats = dict(zip(STEP_STATS, torch.stack(window).mean(0).tolist(), strict=True))
        self._log({"epoch": self.epoch + 1, "step": self.step,
                   "loss": stats["loss_pair"] + stats["loss_global"],
                   "loss_pair": stats["loss_pair"], "loss_global": stats["loss_global"],
                   "pairs": stats["pairs"], "positives": stats["positives"],
                   "grad_norm": stats["grad_norm"],
                   "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": rate})

    # ------------------------------------------------------------ evaluation, checkpoints

    def _maybe_evaluate(self, final: bool) -> dict[str, float | None] | None:
        cfg = self.config.train
        during = cfg.eval_every and self.epoch % cfg.eval_every == 0
        if not (during or (final and cfg.eval_at_end)):
            return None
        return self.evaluate()

    def evaluate(self) -> dict[str, float | None] | None:
        """Evaluate on the test set (all ranks); rank 0 logs and returns the mAPs."""
        config = self.config
        result = evaluate_model(self.model, self.test_set, self.info,
                                zero_shot=config.data.zero_shot,
                                batch_size=config.train.test_batch_size,
                                num_workers=config.data.num_workers, cache=self.cache,
                                amp=self.amp)
        self.model.train()
        if result is None:
            return None
        tqdm.write(f"evaluation after epoch {self.epoch} (step {self.step}):\n{result.table}")
        self._log({"epoch": self.epoch, "step": self.step,
                   **{f"map_{k}": v for k, v in result.maps.items()}})
        return result.maps

    def _checkpoint(self, metrics: dict[str, float | None] | None) -> None:
        """Write a checkpoint (rank 0; every rank contributes its RNG state) and, when
        ``metrics`` beat the best so far, ``best.safetensors``."""
        improved = False
        if self.info.is_main and metrics is not None:
            value = metrics.get(self.best_metric)
            if value is None and self.best_metric not in metrics:
                raise ValueError(f"train.best_metric={self.best_metric!r} is not among the "
                                 f"evaluation's metrics {sorted(metrics)}")
            improved = value is not None and (self.best_value is None or value > self.best_value)
            if improved:
                self.best_value = value
        rngs = all_gather_objects(rng_state())
        if not self.info.is_main:
            return
        state = {"epoch": self.epoch, "batches_done": self.batches_done, "step": self.step,
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "best_metric": self.best_metric,
                 "best_value": self.best_value, "rng": rngs,
                 "world_size": self.info.world_size, "micro_batch": self.micro_batch,
                 "seed": self.config.train.seed, "config": dump_experiment(self.config)}
        self.checkpoints.save(self.model, state, self.step)
        if improved:
            self.checkpoints.save_best(self.model, self.best_metric, float(self.best_value),
                                       self.step)


RESUME_APPLIED = frozenset({
    "train.epochs", "train.max_steps", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.eval_every", "train.tensorboard", "train.device",
    "train.cpu_threads", "train.test_batch_size", "data.num_workers", "feature_cache.enabled",
    "feature_cache.dir"})
"""Settings a resumed run may change: its length, logging, evaluation and resources."""
RESUME_IGNORED = frozenset({"name", "train.output_dir"})


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def train(config: ExperimentConfig, resume: str | Path | bool | None = None,
          label: Callable[[str], str] = str) -> Path:
    """Train an experiment (see :class:`Trainer`, also for ``label``); returns its output
    folder.

    The output folder is locked for the run (:func:`clip4hoi.fileio.folder_lock`, by rank
    0): a second run into it — fresh or resumed — is refused while this one runs.
    Temporary files that a killed run left there are removed first."""
    info = init_distributed(config.train.device)
    lock = folder_lock(config.output_dir, "{output_dir}") if info.is_main else \
        contextlib.nullcontext()
    with lock:
        if info.is_main:
            removed = [*sweep_temp_files(config.output_dir, ("config.yaml.", "metrics.jsonl.")),
                       *sweep_temp_files(config.output_dir / "checkpoints",
                                         ("step_", "best.safetensors."))]
            if removed:
                print(f"removed {len(removed)} temporary file(s) that a killed run left in "
                      f"{config.output_dir}")
        return Trainer(config, info=info, resume=resume, label=label).fit()
