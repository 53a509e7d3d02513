"""Text-only instruction conversations mixed into PV-LLM training (paper §5.4, Table 6).

Input: LLaVA's conversation JSON, as in Video-LLaVA's ``nlp_tune.json`` or LLaVA's
``llava_v1_5_mix665k.json``:
``[{"id": ..., "conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}]``
(a ``.jsonl`` with one such object per line also works). Only text-only items are used: an item with an
``image``/``video`` key, or an ``<image>``/``<video>`` placeholder in its text, is skipped and counted, as is
a malformed one. Like LLaVA's preprocessing, a leading ``gpt`` turn and a trailing unanswered ``human`` turn
are dropped.

Each conversation is rendered in the chat format of the video prompt (``pvllm.prompt.chat_prompt``)
without the video: ``USER: {human} ASSISTANT: {gpt}</s>USER: ...``; the loss covers exactly the ``gpt``
replies and their EOS. A text-only sample has no video token and no pixel values: the collator stacks
``pixel_values_videos`` of the video samples of a batch only (VideoLlava scatters video features into the
video tokens of the whole batch in order), and passes ``None`` for a batch without video.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from pvllm.utils.jsonl import JsonlError, load_jsonl

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
MEDIA_KEYS = ("image", "video")
PLACEHOLDERS = ("<image>", "<video>")


@dataclass(frozen=True)
class Conversation:
    id: str
    turns: tuple[tuple[str, str], ...]  # (human, gpt) pairs


def parse_conversation(item: Any) -> tuple[Conversation | None, str | None]:
    """(conversation, None) for a usable text-only item, else (None, reason it is skipped)."""
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        return None, "malformed: no conversations list"
    if any(k in item for k in MEDIA_KEYS):
        return None, "has image/video (not text-only)"
    msgs = item["conversations"]
    if any(
        not isinstance(m, dict)
        or m.get("from") not in ("human", "gpt")
        or not isinstance(m.get("value"), str)
        for m in msgs
    ):
        return None, "malformed: a turn is not {from: human|gpt, value: str}"
    if any(p in m["value"] for m in msgs for p in PLACEHOLDERS):
        return None, "media placeholder in text"
    if msgs and msgs[0]["from"] == "gpt":  # LLaVA drops a conversation-opening gpt turn too
        msgs = msgs[1:]
    if len(msgs) % 2:  # a final question without its answer teaches nothing
        msgs = msgs[:-1]
    if not msgs:
        return None, "malformed: no human/gpt pair"
    if any(m["from"] != ("human", "gpt")[i % 2] for i, m in enumerate(msgs)):
        return None, "malformed: turns do not alternate human/gpt"
    turns = tuple((msgs[i]["value"], msgs[i + 1]["value"]) for i in range(0, len(msgs), 2))
    return Conversation(str(item.get("id", "")), turns), None


def load_conversations(path: str | Path, skipped: Counter[str] | None = None) -> list[Conversation]:
    """The text-only conversations of a LLaVA JSON/JSONL file; skipped items counted by reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text instruction file not found: {path} (data.text_instructions.path)")
    if path.suffix == ".json":
        raw = path.read_bytes()
        try:
            items = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise JsonlError(f"{path}: not UTF-8 at byte offset {e.start} (byte 0x{raw[e.start]:02x})") from None
    else:
        items = load_jsonl(path)  # a bad line or byte raises naming file, line (and byte offset)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of conversations (LLaVA format)")
    reasons: Counter[str] = Counter()
    out = []
    for item in items:
        conv, why = parse_conversation(item)
        if conv is None:
            reasons[why] += 1
        else:
            out.append(conv)
    if reasons:
        log.warning("%s: skipped %d of %d items: %s", path, sum(reasons.values()), len(items), dict(reasons))
        if skipped is not None:
            skipped.update({f"{path}: {r}": n for r, n in reasons.items()})
    if not out:
        raise ValueError(
            f"{path}: no usable text-only conversation among {len(items)} items ({dict(reasons)})"
        )
    return out


def encode_conversation(
    tokenizer: Any, turns: Sequence[Sequence[str]], max_tokens: int = 1024, max_turn_tokens: int = 256
) -> dict[str, torch.Tensor]:
    """input_ids/labels of ``USER: h ASSISTANT: g</s>...``: labels are the gpt tokens + EOS, -100 elsewhere.

    Each human and gpt text is cut to ``max_turn_tokens``; turns after the first stop once ``max_tokens``
    would be exceeded, so every sample keeps at least its first reply.
    """
    ids: list[int] = []
    labels: list[int] = []
    for i, (human, gpt) in enumerate(turns):
        h = tokenizer(" ".join(human.split()), add_special_tokens=False)["input_ids"][:max_turn_tokens]
        prompt = tokenizer("USER:", add_special_tokens=i == 0)["input_ids"] + h
        prompt += tokenizer(" ASSISTANT:", add_special_tokens=False)["input_ids"]
        reply = tokenizer(" " + gpt.strip(), add_special_tokens=False)["input_ids"][:max_turn_tokens]
        reply += [tokenizer.eos_token_id]
        if i > 0 and len(ids) + len(prompt) + len(reply) > max_tokens:
            break
        ids += prompt + reply
        labels += [IGNORE_INDEX] * len(prompt) + reply
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def text_item(conv: Conversation) -> dict[str, Any]:
    """A dataset item the collator encodes without video."""
    return {"sample_id": f"text:{conv.id}", "frames": None, "conversations": conv.turns}


class MixedEpoch(Dataset):
    """One epoch's video samples plus ``round(ratio × n_video)`` text conversations, interleaved.

    Which conversations and where they go depend only on (seed, epoch): an epoch is the same list on
    every rank and after a resume (the loader reads it sequentially).
    """

    def __init__(self, video: Dataset, pool: Sequence[Conversation], ratio: float, seed: int, epoch: int):
        rng = random.Random(f"text-mix:{seed}:{epoch}")
        n_text = round(ratio * len(video))
        picks: list[int] = []
        while len(picks) < n_text:  # without replacement until the pool is used up, then again
            perm = list(range(len(pool)))
            rng.shuffle(perm)
            picks += perm[: n_text - len(picks)]
        self.order = [("video", i) for i in range(len(video))] + [("text", j) for j in picks]
        rng.shuffle(self.order)
        self.video, self.pool = video, pool

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        kind, j = self.order[i]
        return self.video[j] if kind == "video" else text_item(self.pool[j])


def mix_text_instructions(
    make: Callable[[int], Dataset],
    *,
    path: str,
    ratio: float,
    seed: int,
    max_tokens: int = 1024,
    max_turn_tokens: int = 256,
    skipped: Counter[str] | None = None,
) -> Callable[[int], Dataset]:
    """Wrap an epoch -> video dataset factory so each epoch also holds text conversations.

    ``max_tokens``/``max_turn_tokens`` are the collator's (listed so that a mistyped setting is an error).
    """
    if ratio < 0:
        raise ValueError(f"data.text_instructions.ratio must be >= 0, got {ratio}")
    pool = load_conversations(path, skipped)
    log.info(
        "text-only instructions: %d conversations from %s, %.2f per video sample", len(pool), path, ratio
    )
    return lambda epoch: MixedEpoch(make(epoch), pool, ratio, seed, epoch)
