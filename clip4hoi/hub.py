"""Trained CLIP4HOI heads on the Hugging Face Hub: download, push, model cards.

A Hub model repository of clip4hoi holds

* ``model.safetensors`` — the head checkpoint exactly as ``clip4hoi train`` writes it (head
  weights, model config in the metadata); the frozen DETR and CLIP come from their own
  sources (:mod:`clip4hoi.weights`), as for a local checkpoint;
* ``config.json`` — the model config, readable on the Hub's page;
* ``README.md`` — the model card written by :func:`model_card`.

``hf://ORG/NAME[@REVISION]`` (optionally ``hf://ORG/NAME/FILE.safetensors@REVISION``) works
wherever a checkpoint path does. Files come through the package's one Hub route,
:func:`clip4hoi.weights.fetch_hub`, into its one cache (``$CLIP4HOI_HOME/huggingface``, or
the Hugging Face cache when ``HF_HOME``/``HF_HUB_CACHE`` is set) and are read from there
afterwards, also offline (``HF_HUB_OFFLINE=1``). A head that is neither cached nor
downloadable raises :class:`~clip4hoi.errors.WeightsUnavailableError` (exit code 3), as
other weights do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from clip4hoi.errors import InputError, UnreachableError, UserError
from clip4hoi.weights import fetch_hub

SCHEME = "hf://"
HEAD_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"


def parse_hub_uri(uri: str) -> tuple[str, str, str | None]:
    """``hf://org/name[/file.safetensors][@revision]`` → ``(repo_id, filename, revision)``."""
    rest, _, revision = uri.removeprefix(SCHEME).partition("@")
    parts = [part for part in rest.split("/") if part]
    if len(parts) < 2 or (revision == "" and "@" in uri):
        raise InputError(f"checkpoint {uri!r}: expected hf://ORG/NAME, hf://ORG/NAME@REVISION "
                         f"or hf://ORG/NAME/FILE.safetensors@REVISION")
    filename = "/".join(parts[2:]) or HEAD_FILE
    return f"{parts[0]}/{parts[1]}", filename, revision or None


def resolve_checkpoint(path: str | Path) -> Path:
    """A local checkpoint path as is; an ``hf://`` one downloaded (or found in the cache)."""
    if isinstance(path, str) and path.startswith(SCHEME):
        return download_head(*parse_hub_uri(path))
    return Path(path)


def download_head(repo_id: str, filename: str = HEAD_FILE, revision: str | None = None) -> Path:
    """Path of ``filename`` of the Hub repository ``repo_id`` at ``revision`` (a branch, tag
    or commit; default ``main``) in the Hub cache (:func:`clip4hoi.weights.fetch_hub`),
    downloaded if missing."""
    where = f"hf://{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    return fetch_hub(repo_id, filename, revision=revision, what=f"checkpoint {where}",
                     hint="(or give the path of a local .safetensors file as the checkpoint)")


# ----------------------------------------------------------------------------- push


def push(checkpoint: str | Path, repo_id: str, revision: str | None = None,
         private: bool = False, run_dir: str | Path | None = None,
         message: str | None = None, token: str | None = None) -> str:
    """Upload a head checkpoint as ``model.safetensors`` of the Hub model repository
    ``repo_id`` (created if missing), with ``config.json`` and a model card (one commit,
    on branch ``revision`` if given, created from ``main`` if missing). ``run_dir``: the
    training run whose ``config.yaml`` and ``metrics.jsonl`` describe it (default: found
    beside the checkpoint; a given one must be such a folder). Returns the commit's URL.
    A Hub that cannot be reached (offline, ``HF_HUB_OFFLINE``) raises
    :class:`~clip4hoi.errors.UnreachableError` (exit code 3, as for downloads)."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    from clip4hoi.engine.checkpoint import read_checkpoint

    checkpoint = Path(checkpoint)
    config, _, _ = read_checkpoint(checkpoint)
    card = model_card(checkpoint, repo_id, run_dir)
    operations = [
        CommitOperationAdd(HEAD_FILE, str(checkpoint)),
        CommitOperationAdd(CONFIG_FILE, json.dumps(_config_dict(config), indent=1).encode()),
        CommitOperationAdd(CARD_FILE, card.encode()),
    ]
    api = HfApi(token=token, library_name="clip4hoi")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(repo_id, operations, revision=revision,
                                 commit_message=message or f"Upload {checkpoint.name}")
    except LocalTokenNotFoundError as error:
        raise UserError("not logged in to the Hugging Face Hub; run `hf auth login` or set "
                        "HF_TOKEN") from error
    except OfflineModeIsEnabled as error:
        raise UnreachableError(f"cannot upload {checkpoint} to {repo_id}: HF_HUB_OFFLINE is "
                               f"set; unset it and push again") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        hint = ("; check that your token may write to it (hf auth login)"
                if status in (401, 403) else "")
        raise UserError(f"the Hub refused the upload to {repo_id}: {error}{hint}") from error
    except _connection_errors() as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else \
            type(error).__name__
        raise UnreachableError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} to upload {checkpoint} "
            f"to {repo_id} ({reason}); check the network connection (or HF_ENDPOINT) and push "
            f"again") from error
    return str(info.commit_url)


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What the HTTP client of ``huggingface_hub`` raises when the Hub cannot be reached:
    ``httpx2`` (``huggingface_hub`` 2), ``httpx`` (1.x) or ``requests`` (0.x) errors,
    whichever it loaded, and ``OSError``."""
    found: list[type[BaseException]] = [OSError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        for name in names:
            error = getattr(sys.modules.get(module), name, None)
            if isinstance(error, type) and issubclass(error, BaseException):
                found.append(error)
    return tuple(found)


def _config_dict(config: Any) -> dict:
    from clip4hoi.config import to_dict

    return to_dict(config)


# ----------------------------------------------------------------------- model card


def find_run_dir(checkpoint: Path) -> Path | None:
    """The training run a checkpoint belongs to: the nearest of its folder and that
    folder's parent (``RUN/checkpoints/step_N.safetensors``) with a ``metrics.jsonl`` or
    ``config.yaml``."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "metrics.jsonl").is_file() or (folder / "config.yaml").is_file():
            return folder
    return None


def read_metrics(path: Path, step: int | None = None) -> dict[str, Any] | None:
    """The evaluation line (one with ``map_*`` keys) of a ``metrics.jsonl`` that belongs to
    the checkpoint of optimiser step ``step`` (the last one at or before it), or the last
    evaluation when ``step`` is None."""
    if not path.is_file():
        return None
    evaluations = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}, line {number}: not JSON ({error.msg})") from None
        if not isinstance(entry, dict):
            raise InputError(f"{path}, line {number}: not a metrics entry (a JSON object)")
        maps = {key: value for key, value in entry.items() if key.startswith("map_")}
        if not maps:
            continue
        if not (all(value is None or _is_number(value) for value in maps.values())
                and _is_number(entry.get("step", 0))):
            raise InputError(f"{path}, line {number}: an evaluation whose step and map_* "
                             f"values are not all numbers")
        evaluations.append(entry)
    if step is not None:
        evaluations = [entry for entry in evaluations if entry.get("step", 0) <= step]
    return evaluations[-1] if evaluations else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def model_card(checkpoint: str | Path, repo_id: str, run_dir: str | Path | None = None) -> str:
    """The ``README.md`` of a pushed head: Hub metadata, how to load it, the model config,
    its class set, the training data and the evaluation from the run's ``metrics.jsonl``."""
    from huggingface_hub import ModelCardData

    from clip4hoi.data.metadata import load_classes
    from clip4hoi.engine.checkpoint import read_checkpoint

    checkpoint = Path(checkpoint)
    run = _run_folder(run_dir) if run_dir is not None else None
    config, tensors, metadata = read_checkpoint(checkpoint)
    run = run or find_run_dir(checkpoint)
    experiment = _read_yaml(run / "config.yaml") if run else {}
    step = int(metadata["step"]) if metadata.get("step", "").isdigit() else None
    metrics = read_metrics(run / "metrics.jsonl", step) if run else None
    shown = config.classes
    try:
        classes = load_classes(config.classes, config.detector.type == "grounding_dino")
        class_text = f"({len(classes)} classes, {len(set(classes.verbs))} verbs)"
        if shown.lstrip().startswith("{"):   # a custom dataset's classes, stored whole
            shown = classes.name
    except (OSError, ValueError):  # a class file of the training machine
        class_text = "(a class file of the training machine, not included)"
    data = experiment.get("data") if isinstance(experiment.get("data"), dict) else {}
    train = experiment.get("train") if isinstance(experiment.get("train"), dict) else {}
    dataset = str(data.get("dataset", "hicodet"))
    card_data = ModelCardData(
        library_name="clip4hoi", license="mit", pipeline_tag="object-detection",
        tags=["clip4hoi", "human-object-interaction", "hoi-detection", "zero-shot", "clip",
              dataset])
    parameters = sum(tensor.numel() for tensor in tensors.values())
    lines = [
        "---", card_data.to_yaml(), "---", "",
        f"# CLIP4HOI head: {repo_id}", "",
        "The trained head (HO interactor, HOI decoder, HOI classifier; "
        f"{parameters / 1e6:.2f} M parameters) of [CLIP4HOI](https://arxiv.org/abs/2311.16475) "
        "(NeurIPS 2023), a zero-shot human–object interaction detector, for the "
        "`clip4hoi` package. The frozen DETR "
        f"(`{config.detector.weights}`) and CLIP (`{config.clip.name}` / "
        f"`{config.clip.pretrained}`) are fetched from their own sources on first use.", "",
        "## How to load", "",
        "```python", "from clip4hoi import HOIDetector", "",
        f'detector = HOIDetector.from_pretrained("{repo_id}")',
        '[result] = detector("photo.jpg", classes="ride bicycle, hold cup")', "```", "",
        "```bash",
        f"clip4hoi detect photos/ --checkpoint hf://{repo_id}",
        f"clip4hoi demo --checkpoint hf://{repo_id}        # web demo in the browser",
        "```", "",
        f"Pin a revision with `hf://{repo_id}@REVISION` or `from_pretrained(..., "
        "revision=...)`. Offline, the copy in the Hugging Face cache is used.", "",
        "## Class set", "",
        f"Default classes: `{shown}` {class_text}; any class set given as text "
        "works at inference "
        "(`classes=\"ride bicycle, hold cup\"`).", "",
        "## Training data", "",
        *_training_lines(data, train, metadata), "",
        "## Evaluation", "",
        *_metric_lines(metrics, run), "",
        "## Config", "",
        "```yaml", yaml.safe_dump(_config_dict(config), sort_keys=False).rstrip(), "```", "",
        "## Citation", "",
        "```bibtex",
        "@inproceedings{mao2023clip4hoi,",
        "  title     = {CLIP4HOI: Towards Adapting CLIP for Practical Zero-Shot HOI Detection},",
        "  author    = {Mao, Yunyao and Deng, Jiajun and Zhou, Wengang and Li, Li and Fang, Yao "
        "and Li, Houqiang},",
        "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},",
        "  year      = {2023}", "}", "```", "",
    ]
    return "\n".join(lines)


def _run_folder(run_dir: str | Path) -> Path:
    """``--run-dir`` checked: a folder holding a run's ``config.yaml`` or ``metrics.jsonl``."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{{run_dir}} {run_dir}: " + (
            "is a file; give the training run's folder (the one with config.yaml and "
            "metrics.jsonl)" if run.exists() else "no such folder"))
    if not ((run / "config.yaml").is_file() or (run / "metrics.jsonl").is_file()):
        raise InputError(f"{{run_dir}} {run_dir}: holds neither config.yaml nor metrics.jsonl "
                         f"of a training run")
    return run


def _read_yaml(path: Path) -> dict:
    from clip4hoi.config import parse_yaml, yaml_problem

    if not path.is_file():
        return {}
    try:
        data = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({yaml_problem(error)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level (a clip4hoi train "
                         f"config.yaml)")
    return data


def _training_lines(data: dict, train: dict, metadata: dict[str, str]) -> list[str]:
    if not data:
        return ["Not recorded (no `config.yaml` of the training run was found beside the "
                "checkpoint; `clip4hoi push --run-dir RUN` names it)."]
    names = {"hicodet": "HICO-DET", "vcoco": "V-COCO"}
    split = data.get("zero_shot")
    lines = [f"* dataset: {names.get(data.get('dataset'), data.get('dataset'))}, training "
             f"annotations `{data.get('train_annotations')}`",
             f"* zero-shot setting: {split} (unseen classes removed by "
             f"`{data.get('zero_shot_rule')}`)" if split else
             "* setting: fully supervised (all classes seen)"]
    if train:
        lines.append(f"* schedule: {train.get('epochs')} epochs, batch size "
                     f"{train.get('batch_size')}, lr {train.get('lr')}")
    if "epoch" in metadata or "step" in metadata:
        lines.append(f"* this checkpoint: epoch {metadata.get('epoch')}, step "
                     f"{metadata.get('step')}")
    return lines


def _metric_lines(metrics: dict[str, Any] | None, run: Path | None) -> list[str]:
    if metrics is None:
        return ["No evaluation recorded" + (f" in {run / 'metrics.jsonl'}" if run else
                " (no `metrics.jsonl` of the training run was found)") + "."]
    rows = [(key.removeprefix("map_"), value) for key, value in metrics.items()
            if key.startswith("map_")]
    return [f"mAP (%) on the test set after epoch {metrics.get('epoch')} "
            f"(step {metrics.get('step')}), from the run's `metrics.jsonl`:", "",
            "| split | mAP |", "|---|---|",
            *(f"| {name} | {'n/a' if value is None else f'{value:.2f}'} |"
              for name, value in rows)]
