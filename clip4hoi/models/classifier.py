"""HOI classifier: CLIP's text encoder as a fine-grained, open-vocabulary classifier.

Each class is embedded from the prompt ``[PREFIX]*n verb [CONJUN]*m object`` with learnable
``[PREFIX]`` and ``[CONJUN]`` embeddings shared by all classes. With T̂ = norm(T),
P̂ = norm(W_P·P) for pair features P and Î = norm(W_I·I) for the global image feature I,
the paper's scores (``head.logits: fixed``) are

    S_pair = σ(P̂·T̂ᵀ / τ),    S_glob = σ(Î·T̂ᵀ / τ)

with one fixed temperature τ (``head.temperature``) shared by both and no bias. The
SigLIP-style variant ``head.logits: learned`` (the form of checkpoints written before the
option existed) learns a scale and a bias per score instead:
``S_pair = σ(s_p · P̂·T̂ᵀ + b_p)``, ``S_glob = σ(s_g · Î·T̂ᵀ + b_g)`` (scales stored as
logs). The class embeddings of a class set are cached whenever the prompts are not being
trained.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clip4hoi.config import HeadConfig
from clip4hoi.data.metadata import HOIClassSet, words
from clip4hoi.models.clip import CLIPEncoder

_CACHE_SIZE = 4


def _context(clip: CLIPEncoder, length: int, init: str | None, name: str) -> Tensor:
    """``[length, text_width]`` context: N(0, 0.02), with the last slots set to the word
    embeddings of ``init`` when given."""
    context = torch.randn(length, clip.text_width) * 0.02
    if init:
        words_ = clip.word_embeddings(init)
        if len(words_) > length:
            raise ValueError(f"head.{name}_init {init!r} has {len(words_)} tokens, more than "
                             f"head.{name}_length = {length}")
        context[length - len(words_):] = words_
    return context


class HOIClassifier(nn.Module):
    """Scores pair features and global image features against class text embeddings."""

    def __init__(self, clip: CLIPEncoder, cfg: HeadConfig) -> None:
        super().__init__()
        prefix = _context(clip, cfg.prefix_length, cfg.prefix_init, "prefix")
        conjunction = _context(clip, cfg.conjunction_length, cfg.conjunction_init,
                               "conjunction")
        if cfg.learn_prompts:
            self.prefix = nn.Parameter(prefix)
            self.conjunction = nn.Parameter(conjunction)
        else:
            self.register_buffer("prefix", prefix)
            self.register_buffer("conjunction", conjunction)
        dim = clip.embed_dim
        self.pair_proj = nn.Linear(dim, dim)                  # W_P
        self.image_proj = nn.Linear(dim, dim)                 # W_I, starts as the identity
        nn.init.eye_(self.image_proj.weight)
        nn.init.zeros_(self.image_proj.bias)
        # (head.logits and the temperature were checked with the config:
        # clip4hoi.config.check_model_config)
        self.learned = cfg.logits == "learned"
        if self.learned:                                                  # (pair, global)
            log_scale = math.log(cfg.logit_scale_init)
            self.log_scale = nn.Parameter(torch.full((2,), log_scale))
            self.bias = nn.Parameter(torch.full((2,), cfg.logit_bias_init))
        self.temperature = cfg.temperature
        self._text_cache: OrderedDict[tuple, Tensor] = OrderedDict()

    def text_embeddings(self, clip: CLIPEncoder, classes: HOIClassSet,
                        text: Tensor | None = None) -> Tensor:
        """Normalised class embeddings ``[K, E]``; cached unless gradients must flow to the
        prompts (cache entries are keyed by the prompt tensors' versions). ``text``
        (``[K, E]``, e.g. from :mod:`clip4hoi.engine.text_cache`) is stored as the
        embeddings of ``classes`` under the current prompts instead of encoding them."""
        trainable = torch.is_grad_enabled() and self.prefix.requires_grad
        key = (classes.verbs, classes.object_names, self.prefix.device,
               self.prefix.data_ptr(), self.prefix._version,
               self.conjunction.data_ptr(), self.conjunction._version)
        if text is not None and not trainable:
            self._text_cache[key] = text.to(self.prefix.device)
        if not trainable and key in self._text_cache:
            return self._text_cache[key]
        text = self.prompt_embeddings(clip, classes)
        if not trainable:
            self._text_cache[key] = text
            while len(self._text_cache) > _CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return text

    def prompt_embeddings(self, clip: CLIPEncoder, classes: HOIClassSet,
                          rows: slice = slice(None)) -> Tensor:
        """Normalised embeddings ``[k, E]`` of the classes ``rows`` of ``classes``, through
        the text encoder (gradients flow to the prompts; never cached). The trainer encodes
        a ``1 / world_size`` share of the classes on each rank."""
        verbs = list(classes.verbs[rows])
        objects = [words(name) for name in classes.object_names[rows]]
        return F.normalize(clip.encode_prompts(verbs, objects, self.prefix, self.conjunction),
                           dim=-1)

    def forward(self, pair_features: Tensor, image_features: Tensor, text: Tensor
                ) -> tuple[Tensor, Tensor]:
        """``pair_features`` ``[P, E]``, ``image_features`` ``[B, E]``, ``text`` ``[K, E]``
        (normalised). Returns logits ``[P, K]`` (pairwise) and ``[B, K]`` (global)."""
        pairs = F.normalize(self.pair_proj(pair_features), dim=-1)
        images = F.normalize(self.image_proj(image_features), dim=-1)
        if not self.learned:
            return pairs @ text.T / self.temperature, images @ text.T / self.temperature
        scale = self.log_scale.exp()
        pair_logits = scale[0] * pairs @ text.T + self.bias[0]
        global_logits = scale[1] * images @ text.T + self.bias[1]
        return pair_logits, global_logits
