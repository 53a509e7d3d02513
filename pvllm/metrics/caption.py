"""BLEU-4, METEOR, ROUGE-L and CIDEr-D exactly as coco-caption (pycocoevalcap) computes them, x100.

Two traps of the raw pycocoevalcap pipeline are handled here:
- its PTB tokenizer runs Java with ``-preserveLines`` over one caption per line, so a caption holding any
  line separator (``\\r``, form feed, U+2028, ...) shifts every later caption silently; we replace every
  separator with a space and check that Java returned exactly one line per caption;
- CIDEr-D takes its idf from the evaluated corpus: a 1-item corpus always scores 0 (we warn).

Speed (``benchmarks/bench_caption_metrics.py``): references and hypotheses are tokenized by two PTB JVMs
at once, and METEOR (its own JVM, one stdio round trip per item, waiting outside the GIL) runs in a
thread while BLEU, ROUGE-L and CIDEr-D run in this one. Every scorer is pycocoevalcap's own code on the
same inputs, so the scores are those of running the four one after another (``concurrent=False``).
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")

# Every character str.splitlines() breaks on; Java's PTBLexer breaks on most of them (\r, \f, U+2028, U+2029).
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class CaptionMetricError(RuntimeError):
    """The tokenizer or a scorer returned something that cannot be aligned with the inputs."""


def sanitize_caption(text: str) -> str:
    """Replace every line separator by a space (the PTB tokenizer works line by line)."""
    return _LINE_BREAKS.sub(" ", text)


def ptb_tokenize(texts: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer (same jar, flags and punctuation removal), made safe.

    Differences that do not change tokens: input is sanitized first, the temp file lives in a private
    temp dir (not the package dir, so concurrent runs cannot collide), Java's stderr chatter is
    captured, Java reads/writes UTF-8 whatever the locale, and the line count is checked.
    """
    if not texts:
        return []
    jar_dir = Path(ptbtokenizer.__file__).resolve().parent
    jar = jar_dir / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    with tempfile.TemporaryDirectory(prefix="pvllm-ptb-") as tmp:
        src = Path(tmp) / "captions.txt"
        src.write_bytes("\n".join(sanitize_caption(t) for t in texts).encode("utf-8"))
        cmd = [
            "java",
            "-Dfile.encoding=UTF-8",
            "-cp",
            str(jar),
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
            str(src),
        ]
        proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise CaptionMetricError(f"PTB tokenizer failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(texts) or any(line.strip() for line in lines[len(texts) :]):
        raise CaptionMetricError(
            f"PTB tokenizer returned {len(lines)} lines for {len(texts)} captions: captions would misalign"
        )
    punct = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in lines[: len(texts)]]


@functools.lru_cache(maxsize=1)
def _meteor() -> Meteor:
    # One JVM per process: starting METEOR costs ~6 s.
    return Meteor()


def _check_ids(references: dict[str, str], hypotheses: dict[str, str]) -> list[str]:
    missing = [k for k in hypotheses if k not in references]
    extra = [k for k in references if k not in hypotheses]
    if missing or extra:
        raise ValueError(
            f"hypotheses without a reference: {missing[:5]} ({len(missing)}); "
            f"references without a hypothesis: {extra[:5]} ({len(extra)})"
        )
    for k, v in hypotheses.items():
        if not isinstance(v, str):
            raise TypeError(f"hypothesis {k!r} is {type(v).__name__}, not str (exclude failed generations)")
    return list(hypotheses)


# caption-metric tokenizations: coco = coco-caption exact (PTB); cjk = CJK words segmented first
# (pvllm.utils.segment), then PTB: the PTB tokenizer keeps a Japanese line as one token
TOKENIZATIONS = {"coco": "coco-exact (PTB tokenizer)",
                 "cjk": "CJK segmented (janome) before the PTB tokenizer"}


def caption_metrics_per_item(
    references: dict[str, str], hypotheses: dict[str, str], *, concurrent: bool = True,
    tokenize: str = "coco",
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Corpus scores and per-item scores (both x100), keyed like the inputs.

    Per-item CIDEr-D uses the idf of this whole corpus (as pycocoevalcap does). ``concurrent=False`` runs
    the tokenizer once and the four scorers one after another (the reference way; same scores).
    ``tokenize="cjk"`` splits CJK text into words (janome) before the PTB tokenizer; text without CJK
    characters is unchanged, so its scores are the coco-exact ones.
    """
    if tokenize not in TOKENIZATIONS:
        raise ValueError(f"caption tokenization {tokenize!r}: valid {', '.join(TOKENIZATIONS)}")
    if tokenize == "cjk":
        from pvllm.utils.segment import segment_joined

        references = {k: segment_joined(v) for k, v in references.items()}
        hypotheses = {k: segment_joined(v) if isinstance(v, str) else v for k, v in hypotheses.items()}
    ids = _check_ids(references, hypotheses)
    if len(ids) < 2:
        warnings.warn(
            f"caption metrics on a corpus of {len(ids)} item(s): CIDEr-D takes idf from the corpus, "
            "so it is 0 here",
            stacklevel=2,
        )
    if not ids:
        return {m: float("nan") for m in METRICS}, {}
    refs, hyps = [references[k] for k in ids], [hypotheses[k] for k in ids]
    if concurrent:
        with ThreadPoolExecutor(max_workers=1) as pool:  # the PTB tokenizer works line by line
            ref_tokens = pool.submit(ptb_tokenize, refs)
            hyp_tokens = ptb_tokenize(hyps)
            ref_tokens = ref_tokens.result()
    else:
        tokens = ptb_tokenize(refs + hyps)
        ref_tokens, hyp_tokens = tokens[: len(ids)], tokens[len(ids):]
    gts = {k: [ref_tokens[i]] for i, k in enumerate(ids)}
    res = {k: [hyp_tokens[i]] for i, k in enumerate(ids)}
    # METEOR's stdio protocol uses ' ||| ' as a field separator; PTB keeps '|||' as a token.
    gts_meteor = {k: [v[0].replace("|||", "")] for k, v in gts.items()}

    if concurrent:
        with ThreadPoolExecutor(max_workers=1) as pool:
            meteor_job = pool.submit(_meteor().compute_score, gts_meteor, res)
            bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
            rouge, rouge_items = Rouge().compute_score(gts, res)
            cider, cider_items = Cider().compute_score(gts, res)
            meteor, meteor_items = meteor_job.result()
    else:
        bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
        meteor, meteor_items = _meteor().compute_score(gts_meteor, res)
        rouge, rouge_items = Rouge().compute_score(gts, res)
        cider, cider_items = Cider().compute_score(gts, res)
    corpus = {
        "BLEU-4": 100.0 * float(bleu[3]),
        "METEOR": 100.0 * float(meteor),
        "ROUGE-L": 100.0 * float(rouge),
        "CIDEr": 100.0 * float(cider),
    }
    per_item = {
        k: {
            "BLEU-4": 100.0 * float(bleu_items[3][i]),
            "METEOR": 100.0 * float(meteor_items[i]),
            "ROUGE-L": 100.0 * float(rouge_items[i]),
            "CIDEr": 100.0 * float(cider_items[i]),
        }
        for i, k in enumerate(ids)
    }
    return corpus, per_item


def caption_metrics(references: dict[str, str], hypotheses: dict[str, str]) -> dict[str, float]:
    """Corpus BLEU-4, METEOR, ROUGE-L, CIDEr (x100) of hypotheses against one reference each.

    Both dicts map sample_id -> text and must have the same ids. Failed generations (None) must be
    excluded and counted by the caller; an empty string is a real (bad) generation and scores 0.
    """
    return caption_metrics_per_item(references, hypotheses)[0]
