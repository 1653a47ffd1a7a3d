"""The held-out split shares no user sentence, voice setting or drawn timing with
training, and delegation writes an eval suite in the agreed format.

Two scales: a few episodes per family with real espeak-ng speech, and many
seeds with synthesis and rendering stubbed out (the texts, voices and timings
an episode gets are chosen before synthesis, so the stub changes none of them).
"""

import json
import string

import numpy as np
import pytest

from data_pipeline import generate, generators, tts
from data_pipeline import words as words_lib

FAMILIES = list(generators.FAMILIES)
N_HELDOUT, N_TRAIN = 3, 6             # real speech, episodes per family
N_HELDOUT_FAST, N_TRAIN_FAST = 20, 200  # stubbed speech, episodes per family


# ---- the checkers ----------------------------------------------------------------

def list_overlaps(phrases: dict) -> list[str]:
  """'name: entry' for each held-out entry that any training list also holds."""
  train = {e.strip().lower() for p in phrases.values() for e in p.train}
  return sorted(f"{name}: {e}" for name, p in phrases.items() for e in p.heldout
                if e.strip().lower() in train)


def user_texts(ep) -> set[str]:
  """What the user says or types in an episode (lower case)."""
  return ({p["text"].strip().lower() for p in ep.user_speech}
          | {u["text"].strip().lower() for u in ep.user_text})


def episode_overlaps(heldout_eps, train_eps) -> list[str]:
  """'id: text' for each held-out user text that some training episode also has."""
  seen = set().union(*(user_texts(e) for e in train_eps))
  return sorted({f"{e.id}: {t}" for e in heldout_eps for t in user_texts(e) if t in seen})


def _fields(template: str) -> frozenset:
  return frozenset(f for _, f, _, _ in string.Formatter().parse(template) if f is not None)


# ---- episodes -----------------------------------------------------------------------

def _real(split, n):
  return {f: [generate.make_sample(f, split, seed, 0) for seed in range(n)] for f in FAMILIES}


@pytest.fixture(scope="module")
def real():
  return {"heldout": _real("heldout", N_HELDOUT), "train": _real("train", N_TRAIN)}


def _no_render(pos, rng, shape, distractors=2):
  return np.zeros((len(pos), 2, 2, 3), np.uint8)


def _fake_synthesize(text, *, sample_rate=16000, **voice):
  words = [w for _, _, w in words_lib.split(text)]
  dur = 0.05 + 0.07 * sum(len(w) + 1 for w in words) / 4
  wave = np.full(int(round(dur * sample_rate)), 0.1, np.float32)
  dur = len(wave) / sample_rate
  return tts.Speech(wave=wave, sample_rate=sample_rate, text=text, words=[
      {"text": w, "t_start": round(a, 4), "t_end": round(b, 4)}
      for a, b, w in words_lib.spread(words, 0.0, dur)])


@pytest.fixture
def stubbed(monkeypatch):
  monkeypatch.setattr(tts, "synthesize", _fake_synthesize)
  monkeypatch.setattr(generators, "_render", _no_render)


def _fast(split, families, n):
  return [generate.make_sample(f, split, seed, 0)[0] for f in families for seed in range(n)]


@pytest.fixture(scope="module")
def fast():
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tts, "synthesize", _fake_synthesize)
    mp.setattr(generators, "_render", _no_render)
    return {"heldout": {f: _fast("heldout", [f], N_HELDOUT_FAST) for f in FAMILIES},
            "train": _fast("train", FAMILIES, N_TRAIN_FAST)}


# ---- (a) sentences ----------------------------------------------------------------

def test_phrase_lists_are_split_and_disjoint():
  phrases = generators.USER_PHRASES
  assert list_overlaps(phrases) == []
  for name, p in phrases.items():
    assert isinstance(p.train, tuple) and isinstance(p.heldout, tuple), name
    assert p.train and p.heldout, name
    assert len(set(p.train)) == len(p.train) and len(set(p.heldout)) == len(p.heldout), name
    if len(p.train) >= 4:
      assert len(p.heldout) >= 3, name
    # A held-out template is another wording of the same instruction: same slots.
    assert {_fields(e) for e in p.train} == {_fields(e) for e in p.heldout}, name


def test_list_check_can_fail(monkeypatch):
  q = generators.USER_PHRASES["question"]
  leaked = q.heldout[0]
  monkeypatch.setitem(generators.USER_PHRASES, "question",
                      generators.Phrases(train=q.train + (leaked,), heldout=q.heldout))
  assert list_overlaps(generators.USER_PHRASES) == [f"question: {leaked}"]


def test_split_must_be_known():
  ctx = generators.Context(id="x", family="turn_taking", split="test", seed=0,
                           voices=tts.TRAIN_VOICES)
  with pytest.raises(ValueError, match="split"):
    generators.turn_taking(np.random.default_rng(0), ctx)


@pytest.mark.parametrize("family", FAMILIES)
def test_heldout_user_texts_never_occur_in_training_real_speech(real, family):
  held = [ep for ep, _ in real["heldout"][family]]
  train = [ep for eps in real["train"].values() for ep, _ in eps]
  assert all(user_texts(ep) for ep in held), family
  assert episode_overlaps(held, train) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_heldout_user_texts_never_occur_in_training_many_seeds(fast, family):
  held = fast["heldout"][family]
  assert all(user_texts(ep) for ep in held), family
  assert episode_overlaps(held, fast["train"]) == []
  # And every held-out slot word or sentence drawn is a held-out entry: the
  # families pick from `ctx.split`'s half (the backchannels as one example).
  if family == "backchannel":
    bcs = {p["text"] for ep in held for p in ep.user_speech[1:]}
    assert bcs and bcs <= set(generators.USER_PHRASES["backchannel"].heldout)


def test_episode_check_can_fail(stubbed, monkeypatch):
  q = generators.USER_PHRASES["question"]
  held = [generate.make_sample("turn_taking", "heldout", s, 0)[0] for s in range(3)]
  # Training's question list leaks the held-out questions: the check reports them.
  monkeypatch.setitem(generators.USER_PHRASES, "question",
                      generators.Phrases(train=q.heldout, heldout=q.heldout))
  train = [generate.make_sample("turn_taking", "train", s, 0)[0] for s in range(40)]
  found = episode_overlaps(held, train)
  assert found and all(t.split(": ", 1)[1] in q.heldout for t in found)


# ---- (b) voices and timings ---------------------------------------------------------

def _voices(eps):
  return [v for ep in eps for v in ep.meta["voices"].values()]


def voice_violations(held: list[dict], train: list[dict]) -> list[str]:
  """What breaks the voice split: a voice or a rate/pitch/range value on the wrong side."""
  bad = [f"held-out voice {v['voice']}" for v in held if v["voice"] not in tts.HELDOUT_VOICES]
  bad += [f"training voice {v['voice']}" for v in train if v["voice"] not in tts.TRAIN_VOICES]
  for name, ((lo, hi), (b_lo, b_hi)) in generators.VOICE_RANGES.items():
    bad += [f"held-out {name} {v[name]}" for v in held if not b_lo <= v[name] < b_hi]
    bad += [f"training {name} {v[name]}" for v in train
            if not lo <= v[name] < hi or b_lo <= v[name] < b_hi]
  return bad


@pytest.mark.parametrize("scale", ["real", "fast"])
def test_heldout_voice_settings_lie_outside_the_training_ranges(real, fast, scale):
  if scale == "real":
    held = _voices(ep for eps in real["heldout"].values() for ep, _ in eps)
    train = _voices(ep for eps in real["train"].values() for ep, _ in eps)
  else:
    held = _voices(ep for eps in fast["heldout"].values() for ep in eps)
    train = _voices(fast["train"])
  assert not set(tts.TRAIN_VOICES) & set(tts.HELDOUT_VOICES)
  assert voice_violations(held, train) == []
  for name, ((lo, hi), (b_lo, b_hi)) in generators.VOICE_RANGES.items():
    assert lo < b_lo < b_hi < hi, name
    assert not {v[name] for v in held} & {v[name] for v in train}, name
    if scale == "fast":  # training covers both sides of the held-out band
      train_v = [v[name] for v in train]
      assert min(train_v) < b_lo and max(train_v) >= b_hi, name


def test_voice_check_can_fail():
  # Companion: voices drawn as before the split (one range for both splits)
  # put training values in the held-out band and held-out ones outside it.
  rng = np.random.default_rng(0)

  def old_draw(voice):
    return {"voice": voice, **{k: int(rng.integers(lo, hi)) for k, ((lo, hi), _)
                               in generators.VOICE_RANGES.items()}}
  held = [old_draw(tts.HELDOUT_VOICES[0]) for _ in range(50)]
  train = [old_draw(tts.TRAIN_VOICES[0]) for _ in range(50)]
  bad = voice_violations(held, train)
  assert any(b.startswith("held-out rate") for b in bad)
  assert any(b.startswith("training pitch ") for b in bad)


def _grid_offset(x: float) -> float:
  """Distance (in grid steps) of x from the nearest multiple of the timing grid."""
  k = x / generators.TIMING_GRID
  return abs(k - round(k))


def test_timing_draws_of_the_two_splits_never_coincide():
  rng = np.random.default_rng(0)
  ctx = {s: generators.Context(id="x", family="f", split=s, seed=0, voices=()) for s in
         generators.SPLITS}
  draws = {s: np.array([generators._timing(rng, ctx[s], 0.2, 0.6) for _ in range(2000)])
           for s in generators.SPLITS}
  for s, d in draws.items():
    assert d.min() >= 0.2 and d.max() < 0.6, s
  dist = np.abs(draws["heldout"][:, None] - draws["train"][None, :]).min()
  assert dist == pytest.approx(generators.TIMING_GRID / 2, abs=1e-9)


def test_episode_gaps_sit_on_their_split_grid(fast):
  # turn_taking's gap (question end -> answer) and pause_handling's pause, as written.
  held = fast["heldout"]
  for split, eps in (("heldout", held["turn_taking"] + held["pause_handling"]),
                     ("train", [e for e in fast["train"]
                                if e.family in ("turn_taking", "pause_handling")])):
    for ep in eps:
      if ep.family == "turn_taking":
        gap = ep.task["model_start"] - ep.task["user_turn_end"]
      else:
        gap = ep.task["pause"][1] - ep.task["pause"][0]
      off = _grid_offset(gap)
      if split == "heldout":
        assert abs(off - 0.5) < 0.05, (ep.id, gap)
      else:
        assert off < 0.05, (ep.id, gap)


# ---- (c) delegation refs ------------------------------------------------------------

DELEGATION_KEYS = {"id", "family", "question", "question_end", "delegate_window",
                   "background", "answer", "answer_window", "duration"}


def check_delegation_refs(ep, refs) -> None:
  assert refs["suite"] == "delegation" and set(refs["files"]) == {"input.wav", "task.json"}
  assert refs["files"]["input.wav"] is ep.user_audio
  task = refs["files"]["task.json"]
  assert set(task) == DELEGATION_KEYS
  assert task["id"] == ep.id and task["family"] == "delegation"
  assert task["question"] == ep.task["question"] == ep.user_speech[0]["text"]
  assert task["answer"] == ep.task["answer"]
  assert task["question_end"] == ep.user_speech[0]["t_end"]
  d0, d1 = task["delegate_window"]
  a0, a1 = task["answer_window"]
  assert task["question_end"] <= d0 < d1 <= a0 < a1 and a0 < task["duration"]
  # The episode's own events fall inside the windows.
  delegate = [p["t_start"] for p in ep.model_text if p["text"] == "<delegate>"]
  assert len(delegate) == 1 and d0 <= delegate[0] <= d1
  assert a0 <= ep.task["answer_start"] <= a1
  assert task["background"] == [[b["t"], b["text"]] for b in ep.background_text]
  assert len(task["background"]) == 1 and delegate[0] < task["background"][0][0] < a0
  assert task["duration"] == pytest.approx(ep.duration, abs=1e-3)
  json.dumps(task)  # plain JSON


def test_delegation_refs_have_the_agreed_format(real):
  for split in ("heldout", "train"):
    for ep, refs in real[split]["delegation"]:
      check_delegation_refs(ep, refs)


def test_delegation_windows_are_ordered_over_many_seeds(stubbed):
  for split in generators.SPLITS:
    for seed in range(100):
      check_delegation_refs(*generate.make_sample("delegation", split, seed, 0))


def test_delegation_check_can_fail(real):
  ep, refs = real["heldout"]["delegation"][0]
  task = refs["files"]["task.json"]
  bad = {**refs, "files": {**refs["files"], "task.json": {
      **task, "delegate_window": [task["question_end"] - 0.5, task["delegate_window"][1]]}}}
  with pytest.raises(AssertionError):
    check_delegation_refs(ep, bad)


def test_generate_writes_the_delegation_suite(tmp_path):
  out = tmp_path / "suite"
  manifest = generate.generate(["delegation"], 2, out, split="heldout", seed=0, workers=1,
                               progress=False)
  ids = manifest["families"]["delegation"]
  suite = json.loads((out / "delegation" / "manifest.json").read_text())
  assert suite == {"ids": ids, "family": "delegation", "seed": 0, "voice_set": "heldout"}
  for i in ids:
    assert (out / "delegation" / i / "input.wav").is_file()
    task = json.loads((out / "delegation" / i / "task.json").read_text())
    assert set(task) == DELEGATION_KEYS and task["id"] == i
