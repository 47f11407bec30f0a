"""Running the model: inference for every surface, training and evaluation.

* :mod:`~clip4hoi.engine.predictor` — the one inference pipeline (sources → decoding
  workers → batches of one size → backend → ``Results``), behind ``clip4hoi detect``, the
  API and the demo;
* :mod:`~clip4hoi.engine.backend` — the model call (``TorchBackend``), ``resolve_mode``
  and ``build_backend``;
* :mod:`~clip4hoi.engine.results` — ``Results`` and ``to_records``;
* :mod:`~clip4hoi.engine.sinks` — result files (per image, per video, ``detections.json``);
* :mod:`~clip4hoi.engine.detect` — ``clip4hoi detect`` as a job, shared among torchrun ranks;

* :mod:`~clip4hoi.engine.config` — ``ExperimentConfig`` (model, data, train, feature cache,
  training-free sections) and ``load_experiment`` (YAML with ``base:`` includes);
* :mod:`~clip4hoi.engine.trainer` — ``Trainer`` / ``train``: AdamW, schedules, AMP,
  accumulation, DDP, logging, evaluation, checkpoints;
* :mod:`~clip4hoi.engine.evaluate` — the test loop: ``predict``, ``evaluate_model``,
  ``run_test``;
* :mod:`~clip4hoi.engine.checkpoint` — head checkpoints, training states, RNG, resuming;
* :mod:`~clip4hoi.engine.data` — datasets, resumable seeded sampling, loaders;
* :mod:`~clip4hoi.engine.feature_cache` — the on-disk cache of frozen DETR / CLIP outputs;
* :mod:`~clip4hoi.engine.distributed` — process group and collectives (torchrun);
* :mod:`~clip4hoi.engine.text_cache` — the on-disk cache of class text embeddings (of
  ``backend.py``).
"""
