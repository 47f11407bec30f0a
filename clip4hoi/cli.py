"""The ``clip4hoi`` command line: detect, export, demo, push, download, eval,
make-synthetic, convert, train, test.

Here, and only here, settings are worded as flags: the library names them by their field
names in what it says (``{top_k}`` in the message of a :class:`~clip4hoi.errors.UserError`,
in a printed line or a reason: :func:`clip4hoi.errors.worded`), which the command line
shows with the flag (``--top-k``, :func:`flag`). Building and using the parser imports
neither torch nor any model code, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

MODE_REASONS = {
    "checkpoint": " (auto: a checkpoint is given)",
    "gpu": " (auto: GPU; --mode dense is faster)",
    "cpu": " (auto: CPU; --mode crop is more accurate but much slower on a CPU)",
    "override": " (from --set mode=...)",
    "onnx": " (the ONNX export's)",
}
"""How ``detect`` says why it runs the mode that ``resolve_mode`` chose."""


WORDS = {
    "overrides": "--set", "inputs": "INPUT", "out_dir": "OUT_DIR",
    "n_train": "--train", "n_test": "--test", "coco": "--coco-annotations",
    "detect": "clip4hoi detect", "export_onnx": "clip4hoi export --format onnx --out",
}
"""The command line's words for the library's names that are not ``--name``: flags of
another name, positional arguments, commands."""


def flag(option: str) -> str:
    """The command-line flag of an option (``top_k`` -> ``--top-k``, :data:`WORDS`): how
    the command line words each ``{name}`` of a library message
    (:func:`clip4hoi.errors.worded`)."""
    return WORDS.get(option, f"--{option.replace('_', '-')}")


def _ranked(command: str, body: Callable[[], int], stops: tuple[type, ...] = ()) -> int:
    """Run ``body`` on this rank of a ``torchrun`` job (or the only process). A rank that
    fails leaves the process group at once, naming itself: no barrier holds it while the
    others wait in a collective it will never join, so ``torchrun`` sees it exit and ends
    the job within seconds. ``stops``: errors that end the run on purpose (printed, exit 1).
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        code = body()
    except BaseException as error:
        if distributed:   # (a single process has no group: torch need not be imported)
            from clip4hoi.engine.distributed import shutdown

            shutdown(failed=True)
        if isinstance(error, stops):
            print(f"clip4hoi {command}: stopped: {error}", file=sys.stderr)
            return 1
        _reword(error)
        if distributed:
            print(f"clip4hoi {command}: rank {os.environ.get('RANK', '0')} failed: "
                  f"{type(error).__name__}: {error}", file=sys.stderr)
        raise
    if distributed:
        from clip4hoi.engine.distributed import shutdown

        shutdown()
    return code


# ----------------------------------------------------------------------------- commands


def _lean_open_clip() -> None:
    """Import open_clip without the libraries of what clip4hoi never asks of it (1-2 s of
    start-up; :func:`clip4hoi.models.clip.import_open_clip_lean`): this process runs no
    one else's open_clip code."""
    from clip4hoi.models.clip import import_open_clip_lean

    import_open_clip_lean()



def cmd_detect(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from clip4hoi.options import DetectOptions

    names = {field.name for field in fields(DetectOptions)} - {"overrides"}
    options = DetectOptions(**{name: getattr(args, name) for name in names},
                            overrides=list(args.set))
    return _ranked("detect", lambda: _detect(options))


def _threads(device: object) -> str:
    """``, 2 CPU threads`` on a CPU, nothing on a GPU."""
    if getattr(device, "type", "cpu") != "cpu":
        return ""
    import torch

    return f", {torch.get_num_threads()} CPU thread(s)"


def _detect(options: object) -> int:
    from clip4hoi.engine.detect import DetectJob
    from clip4hoi.errors import EXIT_OK, EXIT_PARTIAL

    job = DetectJob(options)   # options and inputs checked: no torch imported yet
    if options.onnx is None:   # (the ONNX path builds no CLIP)
        _lean_open_clip()
    job.start()
    from clip4hoi.api import RANDOM_WEIGHTS_WARNING
    from clip4hoi.models.precision import describe_precision

    if job.info.is_main:
        scan, classes = job.scan, job.classes
        inputs = f"{len(scan.images)} image(s)" + (f", {len(scan.videos)} video(s)"
                                                   if scan.videos else "")
        ranks = f" on {job.info.world_size} ranks" if job.info.distributed else ""
        print(f"clip4hoi detect: mode {job.mode}{MODE_REASONS.get(job.reason, '')}, "
              f"{describe_precision(job.backend.precision, options.precision, flag)}"
              f"{_threads(job.backend.device)}, "
              f"{len(classes)} classes ({classes.name}), {inputs}{ranks} -> {job.out}",
              file=sys.stderr)
        if scan.unknown:
            print(f"clip4hoi detect: {scan.describe_unknown()}", file=sys.stderr)
        if job.random_weights:
            print(f"WARNING: {'--random-weights' if options.random_weights else options.onnx}"
                  f": {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    summary = job.run(sys.stderr)
    if not job.info.is_main:
        return EXIT_OK
    if summary.combined is not None:
        print(f"clip4hoi detect: all image results in {summary.combined} (clip4hoi eval "
              f"--detections reads it)", file=sys.stderr)
    print(f"clip4hoi detect: {summary.done} done, {summary.skipped} skipped (already done; "
          f"--overwrite to redo), {len(summary.errors)} failed", file=sys.stderr)
    return EXIT_PARTIAL if summary.errors else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit('clip4hoi demo: Gradio is not installed; pip install -e ".[demo]"'
                         ) from None
    from functools import partial

    from clip4hoi.demo import check_address

    check_address(args.host, args.port)   # before minutes of loading the model
    from clip4hoi.api import RANDOM_WEIGHTS_WARNING, load_detector
    from clip4hoi.demo import DemoBackend, launch
    from clip4hoi.devices import parse_device
    from clip4hoi.engine.backend import resolve_mode
    from clip4hoi.models.precision import describe_precision

    device = str(parse_device(args.device))
    mode, _ = resolve_mode(args.mode, args.checkpoint, device, args.set)
    modes = (["trained"] if args.checkpoint or args.random_weights else []) + ["crop", "dense"]
    loader = partial(load_detector, checkpoint=args.checkpoint, device=device,
                     random_weights=args.random_weights, overrides=args.set,
                     precision=args.precision)
    backend = DemoBackend(loader, modes, mode, args.random_weights)
    try:
        _lean_open_clip()
        detector = backend.detector(mode)  # now: missing weights stop here, not a request
        if args.random_weights:
            print(f"WARNING: --random-weights: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
        print(f"clip4hoi demo: mode {mode} on {device}, "
              f"{describe_precision(detector.backend.precision, args.precision, flag)}; "
              f"serving http://{args.host}:{args.port or 7860} (Ctrl-C stops)",
              file=sys.stderr)
        launch(backend, args.host, args.port)
    finally:
        backend.close()   # the uploads' results, also when the model cannot be loaded
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from clip4hoi.errors import OptionError
    from clip4hoi.options import check_checkpoint

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OptionError("out", out, "is a file; give a folder for the export")
    check_checkpoint(args.checkpoint)
    from clip4hoi.api import RANDOM_WEIGHTS_WARNING
    from clip4hoi.engine.backend import build_backend, resolve_mode
    from clip4hoi.engine.export import check_opset, export_onnx, require_exporter

    require_exporter()            # the extra, the opset and the overrides before the model
    check_opset(args.opset)
    mode, reason = resolve_mode(args.mode, args.checkpoint, "cpu", args.set)
    _lean_open_clip()
    backend = build_backend(mode, args.checkpoint, "cpu", args.random_weights, args.set)
    classes = backend.encode_classes(args.classes)   # from the disk cache when there
    print(f"clip4hoi export: mode {mode}{MODE_REASONS.get(reason, '')}, {len(classes)} "
          f"classes ({classes.name}) -> {out}", file=sys.stderr)
    if args.random_weights:
        print(f"WARNING: --random-weights: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    export_onnx(backend.model, out, classes, opset=args.opset, log=sys.stderr)
    print(f"clip4hoi export: done; clip4hoi detect --onnx {out} INPUT runs it with ONNX "
          f"Runtime", file=sys.stderr)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from clip4hoi.hub import push

    url = push(args.checkpoint, args.repo_id, revision=args.revision, private=args.private,
               run_dir=args.run_dir, message=args.message)
    print(f"clip4hoi push: {args.checkpoint} -> {url}", file=sys.stderr)
    return 0




def cmd_download(args: argparse.Namespace) -> int:
    from clip4hoi.errors import EXIT_WEIGHTS, InputError, WeightsUnavailableError
    from clip4hoi.weights import (
        DETR_WEIGHTS,
        OPEN_VOCAB_WEIGHTS,
        cache_root,
        download_clip,
        download_detr,
        resolve_open_vocab,
    )

    if args.list:
        for name, entry in DETR_WEIGHTS.items():
            print(f"{name:24s} {entry.description}\n{'':24s} {entry.url}")
        for name, hub in OPEN_VOCAB_WEIGHTS.items():
            print(f"{name:24s} {hub.description}\n{'':24s} https://huggingface.co/{hub.repo}")
        return 0
    unknown = [n for n in args.detr if n not in DETR_WEIGHTS and n not in OPEN_VOCAB_WEIGHTS]
    if unknown:
        raise InputError(f"unknown detector weights {', '.join(map(repr, unknown))}; choose "
                         f"from {', '.join([*DETR_WEIGHTS, *OPEN_VOCAB_WEIGHTS])} (--list "
                         f"describes them)")
    failures = []
    for name in args.detr:
        try:
            path = (download_detr(name) if name in DETR_WEIGHTS
                    else resolve_open_vocab(name))
            print(f"{name}: {path}")
        except WeightsUnavailableError as error:
            failures.append(str(error))
    try:
        path = download_clip(args.clip, args.clip_pretrained, cache_root() / "clip")
        print(f"CLIP {args.clip}/{args.clip_pretrained}: {path}")
    except WeightsUnavailableError as error:
        failures.append(str(error))
    for message in failures:
        print(f"\n{message}", file=sys.stderr)
    return EXIT_WEIGHTS if failures else 0




def cmd_eval(args: argparse.Namespace) -> int:
    from clip4hoi.data.vcoco_official import PER_PAIR_WARNING
    from clip4hoi.errors import InputError
    from clip4hoi.evaluation import evaluate_files, format_table, result_to_json
    from clip4hoi.evaluation.vcoco import (
        evaluate_vcoco_files,
        format_vcoco_table,
        vcoco_result_to_json,
    )
    from clip4hoi.fileio import check_output_path, write_atomic
    from clip4hoi.options import check_option

    check_option("top_k", args.top_k)
    inputs = [args.annotations, args.detections,
              *(p for p in (args.coco_annotations, args.split_ids) if p)]
    if not Path(args.annotations).exists():   # V-COCO's official files: a folder
        raise InputError(f"--annotations {args.annotations}: no such file or folder")
    if not Path(args.detections).is_file():
        raise InputError(f"--detections {args.detections}: " + (
            "is a folder, not a file" if Path(args.detections).is_dir() else "no such file"))
    if args.json:   # checked before the evaluation, which can take minutes
        check_output_path(args.json, inputs, what="--json")
    start = time.perf_counter()
    if args.vcoco:
        result = evaluate_vcoco_files(args.annotations, args.detections, split=args.split,
                                      coco=args.coco_annotations, split_ids=args.split_ids,
                                      rows=args.vcoco_rows)
        table, payload = format_vcoco_table(result), vcoco_result_to_json(result)
        if not result.complete:
            print(PER_PAIR_WARNING, file=sys.stderr)
    else:
        options: dict = {"preset": args.preset}
        if args.no_offset:
            options["offset"] = 0.0
        if args.top_k:
            options["top_k"] = args.top_k
        if args.train_annotations:
            options["train_annotations"] = args.train_annotations
            inputs.append(args.train_annotations)
        result = evaluate_files(args.annotations, args.detections, zero_shot=args.zero_shot,
                                known_object=args.known_object,
                                rare_threshold=args.rare_threshold, unseen=args.unseen,
                                **options)
        table = format_table(result, per_class=args.per_class, label=flag)
        payload = result_to_json(result)
    print(table)
    print(f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    if args.json:
        write_atomic(args.json, json.dumps(payload, indent=1), inputs=inputs)
    return 0




def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from clip4hoi.data.synthetic import make_custom_synthetic, make_synthetic

    if args.vocabulary:
        summary = make_custom_synthetic(args.out_dir, args.vocabulary, n_train=args.train,
                                        n_test=args.test, seed=args.seed,
                                        overwrite=args.overwrite)
    else:
        summary = make_synthetic(args.out_dir, n_train=args.train, n_test=args.test,
                                 seed=args.seed, overwrite=args.overwrite)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from clip4hoi.data.custom import convert
    from clip4hoi.fileio import check_output_path, write_atomic

    check_output_path(args.dst, [args.src], what="DST")
    data, kind = convert(args.src, split=args.split)
    write_atomic(args.dst, json.dumps(data), inputs=[args.src])
    pairs = sum(len(image["hoi_annotation"]) for image in data["images"])
    print(f"clip4hoi convert: {kind} {args.src} -> {args.dst}: {len(data['images'])} images, "
          f"{pairs} pairs, {len(data['classes'])} classes", file=sys.stderr)
    return 0


def _set_cpu_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def cmd_train(args: argparse.Namespace) -> int:
    from clip4hoi.engine.config import load_experiment
    from clip4hoi.engine.trainer import TrainingError, train

    config = load_experiment(args.config, args.set)
    if args.output_dir:
        config.train.output_dir = args.output_dir
    _set_cpu_threads(config.train.cpu_threads)

    def body() -> int:
        try:
            output_dir = train(config, resume=args.resume, label=flag)
        except KeyboardInterrupt as error:   # Ctrl-C, or SIGTERM (Terminated)
            raise type(error)(f"the checkpoints written so far are kept in "
                              f"{config.output_dir / 'checkpoints'}; continue with "
                              f"--resume") from None
        if os.environ.get("RANK", "0") == "0":
            print(f"clip4hoi train: done; checkpoints, config.yaml and metrics.jsonl in "
                  f"{output_dir}", file=sys.stderr)
        return 0

    return _ranked("train", body, stops=(TrainingError,))


def cmd_test(args: argparse.Namespace) -> int:
    from clip4hoi.engine.config import load_experiment
    from clip4hoi.engine.evaluate import run_test
    from clip4hoi.fileio import check_output_path
    from clip4hoi.hub import resolve_checkpoint

    config = load_experiment(args.config, args.set)
    _set_cpu_threads(config.train.cpu_threads)
    output = Path(args.output or config.output_dir / "detections.json")
    inputs = [args.config, config.data.path(config.data.test_annotations),
              *([args.checkpoint] if args.checkpoint else [])]
    check_output_path(output, inputs, what="--output")   # before the model runs
    checkpoint = resolve_checkpoint(args.checkpoint) if args.checkpoint else None

    def body() -> int:
        _lean_open_clip()
        result = run_test(config, checkpoint, args.mode, output, args.set, args.precision,
                          label=flag)
        if result is not None:
            print(result.table)
            print(f"clip4hoi test: detections in {output}", file=sys.stderr)
        return 0

    return _ranked("test", body)


# ----------------------------------------------------------------------------- the parser


def _add_set(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE``, one override per flag (repeat it): it never swallows inputs."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"config override, repeatable (--set a=1 --set b=2); {what}")


def _add_model_source(parser: argparse.ArgumentParser, set_help: str, mode_help: str,
                      device: bool = True, random_weights: bool = True,
                      precision: bool = True) -> None:
    """The flags that choose the model: ``--checkpoint --mode [--random-weights]
    [--device] [--precision] --set``, the same in ``detect``, ``demo``, ``test`` and
    ``export``."""
    from clip4hoi.options import MODES, PRECISIONS

    parser.add_argument("--checkpoint", help="trained CLIP4HOI head: .safetensors or "
                        "hf://ORG/NAME[@REVISION] (Hugging Face Hub)")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help=f"auto (default): trained with --checkpoint, else the "
                        f"training-free scorer, dense on a CPU and crop on a GPU; {mode_help}")
    if random_weights:
        parser.add_argument("--random-weights", action="store_true",
                            help="random networks, meaningless output: smoke tests only")
    if device:
        parser.add_argument("--device", default="auto", help="auto (default: cuda when "
                            "available, else cpu), cpu, cuda, cuda:1")
    if precision:
        parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                            help="auto (default): bf16 where the hardware runs it natively "
                            "(GPU of compute capability >= 8, CPU with AMX or AVX512-BF16), "
                            "else fp32; boxes and scores stay fp32 (docs/inference.md)")
    _add_set(parser, set_help)


def _add_detect_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "detect", help="find interactions in images, folders and videos",
        description="Find human-object interactions in images, folders (recursive), "
        "videos and live streams. Writes OUT/<name>.json per image, per video "
        "OUT/<name>.jsonl (a line per frame, with track ids) and OUT/<name>.timeline.json, "
        "drawn copies and OUT/detections.json (the format clip4hoi eval reads); see "
        "docs/outputs.md. A video cut short resumes after its last frame done. "
        "torchrun --nproc_per_node=N -m clip4hoi detect ... shares the inputs among N "
        "processes (docs/cli.md).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively), video files or live "
                   "sources: rtsp:// or http(s):// URLs, a camera (/dev/video0, "
                   "avfoundation:0, dshow:video=NAME)")
    _add_model_source(p, "trained mode: the checkpoint's model config "
                      "(detector.score_threshold=0.3 or model.detector.score_threshold=0.3); "
                      "crop/dense: TrainingFreeConfig (margin=0.2 or training_free.margin=0.2)",
                      "the mode is fixed for the run")
    p.add_argument("--classes", help="hicodet | vcoco | FILE | 'ride bicycle, hold cup' "
                   "(default: the checkpoint's classes, or hicodet)")
    p.add_argument("--out", default="detections", help="output folder (default: %(default)s)")
    p.add_argument("--boxes", metavar="ANNOTATIONS",
                   help="use the boxes of this annotation file (HICO-DET instances_*.json or "
                   "QPIC) as proposals instead of DETR's: the oracle setting, for checkpoints "
                   "trained with detector.use_gt_boxes (e.g. configs/smoke.yaml)")
    p.add_argument("--batch-size", type=int, default=0, metavar="N",
                   help="images per forward pass (default: 4 on a GPU, 1 on a CPU); only "
                   "images of one resized size share a batch, so results do not depend on it")
    p.add_argument("--workers", type=int, default=-1, metavar="N",
                   help="image-decoding worker processes (default: 1 on a CPU, up to 4 on a "
                   "GPU, none for fewer than 4 images; 0: none)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads of the model (default: the cores that other work "
                   "leaves idle; 1 is steadiest on a busy machine)")
    p.add_argument("--onnx", metavar="DIR",
                   help="run the model exported by clip4hoi export --format onnx --out DIR "
                   "with ONNX Runtime (needs the onnx extra; CUDA with onnxruntime-gpu)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo inputs already done (default: skip them, so a run resumes)")
    _add_result_flags(p)
    p.add_argument("--test-scale", type=int, default=800, metavar="PIXELS",
                   help="short side images are resized to (default: %(default)s; the "
                   "training config's data.transform.test_scale)")
    p.add_argument("--max-size", type=int, default=1333, metavar="PIXELS",
                   help="longest side after resizing (default: %(default)s)")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="video: detect on every N-th frame (default: every frame)")
    p.add_argument("--fps", type=float, default=0.0,
                   help="video: detect on about FPS frames per second (overrides --every)")
    video = p.add_argument_group("videos: timeline and tracking (docs/outputs.md)")
    video.add_argument("--on-score", type=float, default=0.3, metavar="S",
                       help="an interaction starts at a frame scoring at least S "
                       "(default: %(default)s)")
    video.add_argument("--off-score", type=float, default=0.15, metavar="S",
                       help="... and goes on while its frames score at least S (default: "
                       "%(default)s)")
    video.add_argument("--max-gap", type=float, default=1.0, metavar="SECONDS",
                       help="lower-scoring frames bridged within an interaction (default: "
                       "%(default)s)")
    video.add_argument("--min-length", type=float, default=0.5, metavar="SECONDS",
                       help="shorter interactions are dropped (default: %(default)s)")
    video.add_argument("--lost-seconds", type=float, default=2.0, metavar="SECONDS",
                       help="a person or object not seen keeps its track id this long "
                       "(default: %(default)s)")
    video.add_argument("--track-buffer", type=float, default=0.3, metavar="F",
                       help="boxes widened by F of their size when matched across frames "
                       "(default: %(default)s)")
    p.set_defaults(func=cmd_detect)


def _add_result_flags(parser: argparse.ArgumentParser) -> None:
    """What is kept of each picture's detections and what is drawn."""
    parser.add_argument("--top-k", type=int, default=100, metavar="K", help="detections "
                        "kept per image, best first (default: %(default)s; 0: all)")
    parser.add_argument("--min-score", type=float, default=0.0, metavar="S",
                        help="drop detections scoring below S (default: %(default)s)")
    parser.add_argument("--draw", type=int, default=5, metavar="N",
                        help="human-object pairs drawn per image (default: %(default)s)")
    parser.add_argument("--draw-score", type=float, default=0.0, metavar="S",
                        help="draw only detections scoring at least S (default: %(default)s)")
    parser.add_argument("--no-draw", action="store_true",
                        help="write JSON only, no pictures")


def _add_export_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export", help="write the model as ONNX graphs for ONNX Runtime (detect --onnx)",
        description="Write the frozen DETR and CLIP image tower as ONNX graphs (dynamic "
        "batch and image size), the class embeddings and, for a checkpoint, its head, into "
        "OUT; clip4hoi detect --onnx OUT runs them with ONNX Runtime (docs/inference.md). "
        "Needs the onnx extra.")
    p.add_argument("--format", choices=["onnx"], default="onnx",
                   help="what to write (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write to")
    _add_model_source(p, "as for detect (thresholds are read by detect --onnx from the "
                      "export)", "exports are made on the CPU, so dense without a checkpoint",
                      device=False, precision=False)
    p.add_argument("--classes", help="the class set whose embeddings are exported: hicodet "
                   "| vcoco | FILE | 'ride bicycle, hold cup' (default: the checkpoint's "
                   "classes, or hicodet); detect --onnx takes these or a subset")
    p.add_argument("--opset", type=int, metavar="N",
                   help="ONNX opset (default: the exporter's, 20 with torch 2.14)")
    p.set_defaults(func=cmd_export)


def _add_demo_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="web demo in the browser (needs the demo extra)")
    _add_model_source(p, "for every mode's detector (as for detect)",
                      "the mode at startup (the page can switch)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (0.0.0.0: every interface; default: %(default)s)")
    p.add_argument("--port", type=int, help="default: the first free port from 7860")
    p.set_defaults(func=cmd_demo)


def _add_hub_parsers(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("push", help="upload a trained head to the Hugging Face Hub")
    p.add_argument("checkpoint", help="head checkpoint (.safetensors), e.g. "
                   "outputs/RUN/checkpoints/best.safetensors")
    p.add_argument("repo_id", metavar="ORG/NAME", help="Hub model repository (created if "
                   "missing)")
    p.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--run-dir", help="training run with config.yaml and metrics.jsonl for "
                   "the model card (default: found beside the checkpoint)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)

    p = commands.add_parser("download", help="fetch pretrained DETR and CLIP weights")
    p.add_argument("detr", nargs="*", default=["detr-r50"], metavar="DETECTOR_NAME",
                   help="registered DETR or Grounding DINO weights (default: detr-r50; see "
                   "--list)")
    p.add_argument("--clip", default="ViT-B-16",
                   help="open_clip architecture (default: %(default)s)")
    p.add_argument("--clip-pretrained", default="openai",
                   help="open_clip pretrained tag (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="list the registered detector weights")
    p.set_defaults(func=cmd_download)


def _add_eval_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("eval", help="score detections with the official protocols")
    p.add_argument("--annotations", required=True,
                   help="HICO-DET: instances_test2015.json or test_hico.json; V-COCO: the "
                   "official vcoco_test.json (COCO file and ids found beside it) or a folder "
                   "holding the official layout, or a per-pair instances_vcoco_test.json "
                   "(not the official protocol)")
    p.add_argument("--detections", required=True,
                   help="DETS.json, e.g. the detections.json that clip4hoi detect or test "
                   "writes")
    p.add_argument("--zero-shot", help="rf_uc | nf_uc | uo | uv | uc0..uc4: adds Unseen/Seen")
    p.add_argument("--known-object", action="store_true", help="Known-Object setting")
    p.add_argument("--preset", default="official", choices=["official", "genvlkt", "pocket"],
                   help="evaluation convention (docs/evaluation.md; default: %(default)s)")
    p.add_argument("--no-offset", action="store_true",
                   help="do not add 1 to the detection boxes")
    p.add_argument("--top-k", type=int, default=0, help="keep the top-k detections per image")
    p.add_argument("--per-class", action="store_true", help="print every class")
    p.add_argument("--vcoco", action="store_true",
                   help="V-COCO role AP (scenarios 1 and 2) instead of HICO-DET mAP")
    p.add_argument("--coco-annotations", metavar="FILE",
                   help="V-COCO: instances_vcoco_all_2014.json (default: beside "
                   "vcoco_SPLIT.json or one folder up)")
    p.add_argument("--split-ids", metavar="FILE",
                   help="V-COCO: vcoco_SPLIT.ids (default: beside vcoco_SPLIT.json, in "
                   "splits/ or ../splits/)")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "trainval"],
                   help="V-COCO split when --annotations is a folder (default: %(default)s)")
    p.add_argument("--train-annotations", metavar="FILE",
                   help="custom format: the training file; classes with fewer than "
                   "--rare-threshold pairs in it are Rare (without it: the file's rare "
                   "flags, or Full only)")
    p.add_argument("--rare-threshold", type=int, default=10, metavar="N",
                   help="Rare = fewer than N training pairs (default: %(default)s)")
    p.add_argument("--unseen", metavar="CLASSES",
                   help="custom format: the unseen classes of your zero-shot split ('hold "
                   "drill, ...' or a text file): adds Unseen/Seen")
    p.add_argument("--vcoco-rows", default="per-row", choices=["per-row", "per-person"],
                   help="V-COCO: how DETS.json rows map onto vsrl_eval's detection list: "
                   "per-row, one entry per row (UPT-style exports, clip4hoi test), or "
                   "per-person, the rows sharing a human box are one person's entry (agent "
                   "AP takes their best score per action) (default: %(default)s; "
                   "docs/evaluation.md)")
    p.add_argument("--json", help="write the results here")
    p.set_defaults(func=cmd_eval)


def _add_data_parsers(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("make-synthetic", help="write a small synthetic HICO-DET dataset "
                            "(or one of your own classes, --vocabulary)")
    p.add_argument("out_dir", help="folder to write the dataset to")
    p.add_argument("--vocabulary", metavar="CLASSES",
                   help="your own classes, 'operate drill, hold wrench, ...' (any objects): "
                   "a custom-format dataset (docs/datasets.md) instead of HICO-DET's")
    p.add_argument("--train", type=int, default=64, help="training images (%(default)s)")
    p.add_argument("--test", type=int, default=32, help="test images (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a synthetic dataset already in OUT_DIR")
    p.set_defaults(func=cmd_make_synthetic)

    p = commands.add_parser("convert", help="convert HICO-DET or V-COCO annotations to the "
                            "custom format (docs/datasets.md)")
    p.add_argument("src", metavar="SRC", help="HICO-DET instances_*2015.json (fredzzhang) or "
                   "trainval_hico.json / test_hico.json (QPIC); V-COCO instances_vcoco_*.json "
                   "or the official vcoco_SPLIT.json / v-coco folder")
    p.add_argument("dst", metavar="DST", help="custom-format JSON file to write")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "trainval"],
                   help="V-COCO split when SRC is a folder (default: %(default)s)")
    p.set_defaults(func=cmd_convert)


def _add_experiment_parsers(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train on an experiment config (see configs/; "
                            "torchrun --nproc_per_node=N -m clip4hoi train ... for DDP)")
    p.add_argument("config", help="experiment YAML, e.g. configs/hicodet_rf_uc.yaml")
    _add_set(p, "e.g. --set train.lr=2.0e-4 --set model.detector.weights=detr-r50")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from PATH (a checkpoint or run folder) or, without "
                   "PATH, from the run's latest checkpoint if there is one")
    p.add_argument("--output-dir", help="default: train.output_dir or outputs/<config name>")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("test", help="detect on an experiment's test set, write "
                            "DETS.json and evaluate")
    p.add_argument("config", help="experiment YAML (its data section names the test set)")
    _add_model_source(p, "model.* ones also apply to the checkpoint's model, e.g. "
                      "--set model.detector.weights=detr-r50 --set data.root=/data/hicodet",
                      "the device is the config's train.device", device=False,
                      random_weights=False)
    p.add_argument("--output", help="DETS.json to write (default: OUTPUT_DIR/detections.json)")
    p.set_defaults(func=cmd_test)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``clip4hoi`` command (no torch is imported)."""
    from clip4hoi import __version__

    parser = argparse.ArgumentParser(
        prog="clip4hoi", description="CLIP4HOI: zero-shot human-object interaction detection",
        epilog="exit codes: 0 ok, 1 some inputs failed or training stopped, 2 bad usage or "
        "input, 3 pretrained weights missing or Hub unreachable, 4 environment (disk, "
        "permission, device), 130 interrupted, 143 terminated (docs/cli.md)")
    parser.add_argument("--version", action="version", version=f"clip4hoi {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also after the command)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_detect_parser, _add_export_parser, _add_demo_parser, _add_hub_parsers,
                _add_eval_parser, _add_data_parsers, _add_experiment_parsers):
        add(commands)
    return parser


def _exit_code(error: BaseException) -> int | None:
    """The exit code of an error that is the user's or the machine's, None for a bug."""
    from clip4hoi.errors import EXIT_ENVIRONMENT, EXIT_INTERRUPTED, EXIT_USAGE, UserError
    from clip4hoi.fileio import ENVIRONMENT_ERRNOS

    if isinstance(error, UserError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):   # Ctrl-C; SIGTERM has its own code
        return getattr(error, "exit_code", EXIT_INTERRUPTED)
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return EXIT_ENVIRONMENT
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        return EXIT_ENVIRONMENT
    if isinstance(error, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return EXIT_USAGE
    if isinstance(error, OSError) and error.errno in (errno.ENAMETOOLONG, errno.ELOOP):
        return EXIT_USAGE   # a path no file can have: a name over 255 bytes, a link loop
    if isinstance(error, ValueError):   # library code reports bad values as ValueError
        return EXIT_USAGE
    return None


def _reword(error: BaseException) -> None:
    """Name the settings in a user error's message by their flags (``resume`` ->
    ``--resume``), also in a traceback."""
    from clip4hoi.errors import UserError

    if isinstance(error, UserError):
        error.args = (error.worded(flag),)


def _message(error: BaseException) -> str:
    from clip4hoi.errors import EXIT_WEIGHTS, Terminated, UnreachableError, UserError

    # Missing weights (clip4hoi.weights, not imported here: it loads torch) say how to get
    # them, over a few lines.
    if isinstance(error, UserError) and error.exit_code == EXIT_WEIGHTS and \
            not isinstance(error, UnreachableError):
        return f"missing weights\n{error}"
    if isinstance(error, KeyboardInterrupt):
        what = "terminated (SIGTERM)" if isinstance(error, Terminated) else \
            "interrupted (Ctrl-C)"
        return what + (f"; {error}" if str(error) else "")
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return (f"error: out of memory ({error or 'MemoryError'}); use smaller images, "
                f"batches or a smaller model")
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"error: {error.filename}: {error.strerror}"
    return f"error: {error}"


def _check_early(args: argparse.Namespace) -> None:
    """The arguments that can be checked before minutes of model loading (``detect``
    checks its options, inputs and device itself: a wrong path answers at once)."""
    if isinstance(getattr(args, "device", None), str) and args.command != "detect":
        from clip4hoi.devices import parse_device

        parse_device(args.device)
    if isinstance(getattr(args, "classes", None), str):
        from clip4hoi.data.metadata import load_classes

        # Syntax, duplicates, files; whether the objects suit the detector is checked with it.
        load_classes(args.classes, open_vocabulary=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clip4hoi`` console script.

    Errors of the user or the machine (:mod:`clip4hoi.errors`, a missing file, a full disk,
    Ctrl-C) print one line ``clip4hoi COMMAND: error: MESSAGE`` and give their exit code;
    ``--debug`` (anywhere on the line) shows the traceback instead. Other exceptions are bugs
    and keep their traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [item for item in argv if item != "--debug"]
    args = build_parser().parse_args(argv)
    from clip4hoi.errors import sigterm_raises

    try:
        with sigterm_raises(replace=True):
            _check_early(args)
            return args.func(args)
    except BaseException as error:
        _reword(error)
        code = None if debug else _exit_code(error)
        if code is None:
            raise
        print(f"clip4hoi {args.command}: {_message(error)}", file=sys.stderr)
        return code
