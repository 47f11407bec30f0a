"""Run by ``torchrun`` in the distributed engine tests (one process per rank, gloo).

    distributed_worker.py gradients DATA OUT_DIR OUT_FILE [--set ...]
        the gradients of the first optimiser step (sharded and unsharded prompt encoding)
    distributed_worker.py fail CONFIG [cli train arguments ...]
        ``clip4hoi train`` whose rank 1 raises in its first optimiser step
    distributed_worker.py detect LOG [cli detect arguments ...]
        ``clip4hoi detect`` with DETR's queries labelled person / bicycle
        (``conftest.people_and_bicycles``); each rank appends "RANK NAME" to LOG per result
        file it writes
    distributed_worker.py detect-kill LOG [...]
        the same; in the first attempt rank 1 kills itself (SIGKILL) after 2 images
    distributed_worker.py detect-fail LOG [...]
        the same; rank 1 raises in its second forward pass, rank 0 takes 6 s per image
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist


def gradients(data: Path, out_dir: Path, out_file: Path, overrides: list[str]) -> None:
    from test_engine import tiny_experiment

    from clip4hoi.engine import trainer as trainer_module
    from clip4hoi.engine.distributed import shutdown

    trainer = trainer_module.Trainer(tiny_experiment(data, out_dir, *overrides))
    result = {}
    for name, encode in (("sharded", trainer_module.encode_prompts),
                         ("unsharded", lambda model, classes, info:
                          model.classifier.prompt_embeddings(model.clip, classes))):
        trainer_module.encode_prompts = encode
        result[name] = first_step_gradients(trainer)
        trainer.optimizer.zero_grad(set_to_none=True)
    if dist.get_rank() == 0:
        torch.save(result, out_file)
    shutdown()


def first_step_gradients(trainer) -> dict[str, torch.Tensor]:
    """``.grad`` of every trainable parameter after the first optimiser step's backward."""
    trainer.model.train()
    trainer.sampler.set_epoch(0)
    batches = iter(trainer.loader)
    group = [next(batches) for _ in range(trainer.config.train.accumulation_steps)]
    trainer.accumulate_gradients(group)
    return {name: p.grad.clone() for name, p in trainer.model.named_parameters()
            if p.requires_grad}


def fail(argv: list[str]) -> int:
    from clip4hoi.cli import main
    from clip4hoi.engine.trainer import Trainer

    original = Trainer.train_step

    def train_step(self: Trainer, group: list) -> torch.Tensor:
        if self.info.rank == 1 and self.step == 1:
            raise RuntimeError("CUDA out of memory (simulated on rank 1)")
        return original(self, group)

    Trainer.train_step = train_step
    return main(argv)


def detect(how: str, log: Path, argv: list[str]) -> int:
    import os
    import signal
    import time

    from conftest import people_and_bicycles

    from clip4hoi.cli import main
    from clip4hoi.engine.backend import TorchBackend
    from clip4hoi.engine.results import Results
    from clip4hoi.engine.sinks import ImageFiles
    from clip4hoi.engine.videos import VideoFiles
    from clip4hoi.models.detr import DETR

    rank = int(os.environ["RANK"])
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    DETR.forward = people_and_bicycles(DETR.forward)

    def record(name: str) -> None:
        with open(log, "a") as handle:
            handle.write(f"{rank} {name}\n")

    save, finish = Results.save, VideoFiles.finish

    def logged_save(self: Results, *args, **kwargs) -> Path:
        path = save(self, *args, **kwargs)
        record(self.name)
        return path

    def logged_finish(self: VideoFiles, source, error) -> None:
        finish(self, source, error)
        if error is None and source.kind == "video":
            record(source.name)

    Results.save, VideoFiles.finish = logged_save, logged_finish
    if how == "detect-kill" and rank == 1 and first_attempt:
        write, written = ImageFiles.write, []

        def killed(self: ImageFiles, result: Results) -> None:
            if len(written) == 2:
                for future in self._pending:   # the first two are on disk
                    future.result()
                os.kill(os.getpid(), signal.SIGKILL)
            written.append(result.name)
            write(self, result)

        ImageFiles.write = killed
    if how == "detect-fail":
        call, calls = TorchBackend.__call__, []

        def failing(self: TorchBackend, *args):
            calls.append(1)
            if rank == 1 and len(calls) == 2:
                raise RuntimeError("simulated failure on rank 1")
            if rank == 0:
                time.sleep(6)
            return call(self, *args)

        TorchBackend.__call__ = failing
    return main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "gradients":
        gradients(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
    elif sys.argv[1].startswith("detect"):
        sys.exit(detect(sys.argv[1], Path(sys.argv[2]), sys.argv[3:]))
    else:
        sys.exit(fail(sys.argv[2:]))
