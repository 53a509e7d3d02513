"""Write the bundled text-only instruction sample (Table 6 plumbing): a few SYNTHETIC conversations in
LLaVA's conversation JSON format, written by this script, not taken from LLaVA/Video-LLaVA data.

    python scripts/make_text_instructions.py [--out data/sample/text_instructions]
The real data (e.g. Video-LLaVA's nlp_tune.json) is used with data.text_instructions.path=/path/to/it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SOURCE = "synthetic: written by scripts/make_text_instructions.py (not LLaVA data)"

# (question, answer) pairs written for this sample; a few become multi-turn conversations below
QA = [
    (
        "How do I keep basil fresh for a week?",
        "Trim the stems, stand them in a glass of water like flowers, and keep the glass on the counter, "
        "not in the fridge. Change the water every two days.",
    ),
    (
        "Give me three tips for riding a bike in the rain.",
        "Brake earlier than usual, avoid painted lines and metal covers, and wear something bright so drivers "
        "see you.",
    ),
    (
        "What is the difference between a rabbit and a hare?",
        "Hares are larger, have longer ears and legs, and are born furred with open eyes; rabbits are born "
        "hairless and blind and live in burrows.",
    ),
    (
        "Write a one-sentence summary of why people enjoy short videos.",
        "Short videos deliver a quick laugh or surprise in seconds, which fits into any break in the day.",
    ),
    ("Suggest a name for a cartoon bunny.", "How about Clover? It is short, friendly and easy to remember."),
    (
        "Why do cyclists wait at a red light even when the road is empty?",
        "Traffic rules apply to bikes too, and predictable behaviour keeps everyone safer at junctions.",
    ),
    ("Translate 'good morning' into Spanish and French.", "Spanish: buenos días. French: bonjour."),
    (
        "What makes a comment sound friendly?",
        "Warm words, a compliment or a question to the author, and an emoji or exclamation mark used "
        "sparingly.",
    ),
    (
        "How long should I let a cake cool before frosting it?",
        "Let it cool completely, usually one to two hours, or the frosting will melt and slide off.",
    ),
    (
        "Explain frame rate in one sentence.",
        "Frame rate is how many still images a video shows per second; 25 or 30 looks smooth to most people.",
    ),
]
FOLLOW_UPS = {
    0: (
        "And if it already wilted?",
        "Put the stems in cold water for an hour; mildly wilted basil usually perks up.",
    ),
    4: ("Give me one more option.", "Pip, after the small seed: it suits a small, quick bunny."),
    9: ("Is 60 better?", "It looks smoother for fast motion such as sports, at the cost of larger files."),
}


def conversations() -> list[dict]:
    out = []
    for i, (q, a) in enumerate(QA):
        turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        if i in FOLLOW_UPS:
            fq, fa = FOLLOW_UPS[i]
            turns += [{"from": "human", "value": fq}, {"from": "gpt", "value": fa}]
        out.append({"id": f"synthetic-{i:03d}", "source": SOURCE, "conversations": turns})
    return out


README = """# Text-only instruction sample (SYNTHETIC)

`sample_text_instructions.json` holds {n} short conversations written by `scripts/make_text_instructions.py`
for the Table 6 plumbing (video + text-only training, `python train.py experiment=table6_video_text`).
They are **synthetic**: not LLaVA, ShareGPT or Video-LLaVA data, and too few to change a model. Each item
says so in its `source` field.

Format: LLaVA's conversation JSON, a list of
`{{"id": ..., "conversations": [{{"from": "human", "value": ...}}, {{"from": "gpt", "value": ...}}, ...]}}`
(no `image`/`video` key: text-only). For the paper's setting point `data.text_instructions.path` at
Video-LLaVA's text-only file (`nlp_tune.json` of its training JSONs) or any file of this format.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "data/sample/text_instructions")
    )
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    items = conversations()
    (out / "sample_text_instructions.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(README.format(n=len(items)))
    print(f"wrote {len(items)} synthetic conversations to {out}")


if __name__ == "__main__":
    main()
