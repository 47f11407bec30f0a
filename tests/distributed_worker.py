"""Run by ``torchrun`` in the distributed engine tests (one process per rank, gloo).

    distributed_worker.py gradients DATA OUT_DIR OUT_FILE [--set ...]
        the gradients of the first optimiser step (sharded and unsharded prompt encoding)
    distributed_worker.py fail CONFIG [cli train arguments ...]
        ``clip4hoi train`` whose rank 1 raises in its first optimiser step
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


if __name__ == "__main__":
    if sys.argv[1] == "gradients":
        gradients(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(fail(sys.argv[2:]))
