"""Training and evaluation of experiments (``clip4hoi train`` / ``clip4hoi test``).

* :mod:`~clip4hoi.engine.config` — ``ExperimentConfig`` (model, data, train, feature cache,
  training-free sections) and ``load_experiment`` (YAML with ``base:`` includes);
* :mod:`~clip4hoi.engine.trainer` — ``Trainer`` / ``train``: AdamW, schedules, AMP,
  accumulation, DDP, logging, evaluation, checkpoints;
* :mod:`~clip4hoi.engine.evaluate` — the test loop: ``predict``, ``evaluate_model``,
  ``run_test``;
* :mod:`~clip4hoi.engine.checkpoint` — checkpoint files, RNG states, resuming;
* :mod:`~clip4hoi.engine.data` — datasets, resumable seeded sampling, loaders;
* :mod:`~clip4hoi.engine.feature_cache` — the on-disk cache of frozen DETR / CLIP outputs;
* :mod:`~clip4hoi.engine.distributed` — process group and collectives (torchrun);
* :mod:`~clip4hoi.engine.text_cache` — the on-disk cache of class text embeddings.
"""
