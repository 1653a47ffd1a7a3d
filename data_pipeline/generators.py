"""Synthetic full-duplex episodes with espeak-ng speech and rendered video.

Nine families (FAMILIES), each a function (rng, ctx) -> (Episode, refs). Every
timing is chosen here, then audio is placed at exactly that time, so the
ground truth in `episode.task` is exact by construction (speech intervals are
the trimmed extents of the synthesized phrases; repetition times are the
frames the renderer moved the object in).

`refs` describe the evaluation references of the sample in the formats agreed
with eval/ (WORKSPACE.md, "Data"): per-sample files, plus rows of the shared
RepCount CSV / Charades-STA list, which the caller merges.

The held-out split (ctx.split == 'heldout') shares nothing user-side with
training, by construction:
  - voices: tts.HELDOUT_VOICES (disjoint accents and variants from TRAIN_VOICES);
  - rate, pitch and pitch range: the middle band of each range (VOICE_RANGES),
    which training never draws;
  - timings (gaps, pauses, start offsets, reply delays): `_timing` draws training
    values on a 10 ms grid and held-out ones on the same grid shifted by 5 ms;
  - sentences: every user-side list (questions, pause halves, interruptions,
    backchannels, instructions and their wordings, cue words, cities, ...) is a
    `Phrases` pair in USER_PHRASES, and a family picks from `ctx.split`'s half.
The model's own lines (answers, fillers, acks, counts, tool result formats) are
what the model learns to say and are shared by both splits.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from data_pipeline import tts
from data_pipeline.episode import Episode

SR = 16000
VIDEO_FPS = 10.0          # rendered rate; the loader samples one frame per micro-turn
VIDEO_HW = (160, 160)
SPLITS = ("train", "heldout")


@dataclasses.dataclass
class Context:
  id: str
  family: str
  split: str                      # 'train' | 'heldout'
  seed: int
  voices: tuple[str, ...]


def _split(ctx: Context) -> str:
  if ctx.split not in SPLITS:
    raise ValueError(f"split: {ctx.split!r} is not one of {SPLITS}")
  return ctx.split


# Voice parameters: name -> ((lo, hi), (band_lo, band_hi)), integer ranges [lo, hi).
# Training draws from [lo, hi) minus the band, the held-out split from the band
# only. The band is the middle fifth of each range, so held-out voices take
# values training never sees yet lie inside what it covers on both sides (no
# systematic shift to faster or higher voices for the held-out split).
VOICE_RANGES = {"rate": ((140, 190), (160, 170)),
                "pitch": ((30, 70), (46, 54)),
                "pitch_range": ((30, 70), (46, 54))}


def _voice_param(rng: np.random.Generator, split: str, name: str) -> int:
  (lo, hi), (b_lo, b_hi) = VOICE_RANGES[name]
  if split == "heldout":
    return int(rng.integers(b_lo, b_hi))
  v = int(rng.integers(lo, hi - (b_hi - b_lo)))
  return v + (b_hi - b_lo) if v >= b_lo else v


# Timing draws (gaps, pauses, start offsets, reply and tool delays) sit on a
# 10 ms grid from `lo`; the held-out split's grid is shifted by half a step, so
# a drawn held-out timing is >= 5 ms from every training one (placing audio at
# a sample and writing times with 4 decimals moves a time by < 0.1 ms). The
# video families' event times are the exception: they sit on the 10 fps frames
# in both splits (the references are frame indices, and a half-frame shift
# would put every held-out event between the frames the loader samples).
TIMING_GRID = 0.01


def _timing(rng: np.random.Generator, ctx: Context, lo: float, hi: float) -> float:
  """A timing in [lo, hi): lo + k * 10 ms (training) or lo + (k + 1/2) * 10 ms (held-out)."""
  n = max(1, int(math.floor((hi - lo) / TIMING_GRID + 1e-9)))
  k = int(rng.integers(n))
  return lo + (k + (0.5 if _split(ctx) == "heldout" else 0.0)) * TIMING_GRID


@dataclasses.dataclass(frozen=True)
class Phrases:
  """A user-side list split in two: training never sees a held-out entry."""
  train: tuple[str, ...]
  heldout: tuple[str, ...]

  def of(self, ctx: Context) -> tuple[str, ...]:
    return self.train if _split(ctx) == "train" else self.heldout


class Timeline:
  """Builds an episode: places speech and events at chosen times."""

  def __init__(self, rng: np.random.Generator, ctx: Context):
    self.rng, self.ctx = rng, ctx
    self.user = np.zeros(0, np.float32)
    self.model = np.zeros(0, np.float32)
    self.user_speech, self.model_text = [], []
    self.user_text, self.background = [], []
    v = list(rng.choice(len(ctx.voices), 2, replace=False))
    self.voice = {"user": self._voice(ctx.voices[v[0]]),
                  "model": self._voice(ctx.voices[v[1]])}

  def _voice(self, name):
    split = _split(self.ctx)
    return {"voice": name, **{k: _voice_param(self.rng, split, k)
                              for k in ("rate", "pitch", "pitch_range")}}

  def speak(self, who: str, t: float, text: str) -> dict:
    """Synthesizes `text` in `who`'s voice starting at `t`; returns the phrase."""
    s = tts.synthesize(text, sample_rate=SR, **self.voice[who])
    i = int(round(t * SR))
    buf = self.user if who == "user" else self.model
    if len(buf) < i + len(s.wave):
      buf = np.pad(buf, (0, i + len(s.wave) - len(buf)))
    buf[i:i + len(s.wave)] += s.wave
    t = i / SR
    phrase = {"t_start": round(t, 4), "t_end": round(t + s.duration, 4), "text": text,
              "words": [{"text": w["text"], "t_start": round(t + w["t_start"], 4),
                         "t_end": round(t + w["t_end"], 4)} for w in s.words]}
    if who == "user":
      self.user = buf
      self.user_speech.append(phrase)
    else:
      self.model = buf
      self.model_text.append(phrase)
    return phrase

  def cut_model(self, t: float, fade: float = 0.02) -> None:
    """The model stops talking at `t` (barge-in): audio faded out, later words dropped."""
    i, n = int(round(t * SR)), int(fade * SR)
    seg = self.model[i:i + n]
    self.model[i:i + len(seg)] *= np.linspace(1, 0, len(seg), dtype=np.float32)
    self.model[i + n:] = 0
    for ph in self.model_text:
      if ph["t_end"] > t:
        ph["words"] = [w for w in ph["words"] if w["t_start"] < t]
        for w in ph["words"]:
          w["t_end"] = min(w["t_end"], round(t + fade, 4))
        ph["t_end"] = round(min(ph["t_end"], t + fade), 4)
        ph["text"] = " ".join(w["text"] for w in ph["words"])
        ph["interrupted"] = True
    self.model_text = [p for p in self.model_text if p["words"]]

  def control(self, t: float, token: str) -> None:
    self.model_text.append({"t_start": t, "t_end": t, "text": token,
                            "words": [{"text": token, "t_start": t, "t_end": t}]})

  def typed(self, t: float, text: str) -> None:
    self.user_text.append({"t": round(t, 4), "text": text})

  def result(self, t: float, text: str) -> None:
    self.background.append({"t": round(t, 4), "text": text})

  def end(self) -> float:
    ends = [p["t_end"] for p in self.user_speech + self.model_text]
    ends += [e["t"] for e in self.user_text + self.background]
    return max(ends + [len(self.user) / SR, len(self.model) / SR])

  def build(self, duration: float, task: dict, video=None) -> Episode:
    n = int(math.ceil(duration * SR))
    user = np.pad(self.user, (0, max(0, n - len(self.user))))[:n]
    model = np.pad(self.model, (0, max(0, n - len(self.model))))[:n]
    self.model_text.sort(key=lambda p: p["t_start"])
    task = {**task, "user_speech": [[p["t_start"], p["t_end"]] for p in self.user_speech],
            "model_speech": [[p["t_start"], p["t_end"]] for p in self.model_text
                             if not p["text"].startswith("<")]}
    return Episode(
        id=self.ctx.id, family=self.ctx.family, sample_rate=SR, user_audio=user,
        model_audio=model, user_speech=self.user_speech, model_text=self.model_text,
        user_text=self.user_text, background_text=self.background,
        video=video, video_fps=VIDEO_FPS if video is not None else 0.0, task=task,
        meta={"split": self.ctx.split, "seed": self.ctx.seed, "voices": self.voice})


def _pick(rng, items):
  return items[int(rng.integers(len(items)))]


# ---- user-side phrases, split ------------------------------------------------------
# Every sentence, template and slot word the user says or types. Entries with
# "{...}" are templates (the families fill them); a held-out template is
# another wording of the same instruction, so the task stays the same kind.
# A family picks with `_user(rng, ctx, name)`, from `ctx.split`'s half only.

USER_PHRASES: dict[str, Phrases] = {
    # turn_taking, user_interruption and backchannel
    "question": Phrases(
        train=("what is the capital of france", "can you tell me a fun fact",
               "how do plants make food", "what should I cook tonight",
               "why is the sky blue", "how far away is the moon",
               "what is a good name for a cat", "how do I make tea"),
        heldout=("what is the tallest mountain in the world", "how do bees make honey",
                 "why do leaves change color in autumn", "what is a good book to read",
                 "how many legs does a spider have", "where do penguins live")),
    # pause_handling: the words before and after the pause
    "pause_first": Phrases(
        train=("I was wondering", "so the thing is", "let me see", "tell me about"),
        heldout=("I would like to know", "so basically", "I keep thinking about",
                 "could you explain")),
    "pause_rest": Phrases(
        train=("what time it is in tokyo", "how rainbows form", "where I left my keys",
               "the history of jazz"),
        heldout=("how volcanoes erupt", "why cats purr", "the rules of chess",
                 "where the nearest bank is")),
    "interrupt": Phrases(
        train=("wait, actually, stop for a second", "sorry, can you say that more simply",
               "hold on, I have another question", "no no, tell me something else"),
        heldout=("excuse me, let me jump in here", "hang on, that is not what I asked",
                 "one second, I want to ask something", "sorry to cut in, can we change topic")),
    "backchannel": Phrases(
        train=("mhm", "yeah", "uh huh", "right", "okay", "I see"),
        heldout=("yep", "oh wow", "sure thing", "makes sense")),
    # timespeak: "say WORD every N seconds" and "tell me when N seconds have passed"
    "timespeak_periodic": Phrases(
        train=("say {word} every {n} seconds", "keep saying {word} every {n} seconds"),
        heldout=("every {n} seconds, say {word}", "say {word} once every {n} seconds",
                 "repeat the word {word} every {n} seconds")),
    "timespeak_word": Phrases(
        train=("hello", "ping", "beep", "tick", "now"),
        heldout=("pong", "chime", "hey")),
    "timespeak_elapsed": Phrases(
        train=("tell me when {n} seconds have passed", "let me know when {n} seconds are up"),
        heldout=("after {n} seconds, tell me", "say something when {n} seconds have gone by",
                 "give me a shout once {n} seconds pass")),
    "timespeak_stop": Phrases(
        train=("stop", "okay, you can stop now", "that is enough"),
        heldout=("please stop now", "alright, that will do", "you can quit now")),
    # cuespeak: "whenever I say CUE, say WORD", then sentences with and without the cue.
    # The cue is one word, bare in a cue sentence (the model answers after that
    # word); the held-out cues start with a consonant, for the held-out "a {}".
    "cue_instruction": Phrases(
        train=("whenever I say {cue}, say {say}", "when you hear me say {cue}, say {say}"),
        heldout=("each time I mention {cue}, say {say}", "if I say {cue}, answer {say}",
                 "every time you hear {cue}, reply {say}")),
    "cue_word": Phrases(
        train=("apple", "banana", "orange", "river", "guitar", "pencil"),
        heldout=("lemon", "candle", "rocket", "blanket")),
    "cue_response": Phrases(
        train=("bingo", "yes", "got it", "beep", "ding"),
        heldout=("bravo", "gotcha", "nice one")),
    "cue_sentence": Phrases(
        train=("I ate an {} for lunch", "there is a {} on the table",
               "my friend gave me a {} yesterday", "do you like {} or not",
               "the word {} is fun to say", "we saw a {} at the park"),
        heldout=("I put a {} in my bag", "have you ever seen a {} up close",
                 "she drew a {} on the paper", "the {} was bigger than I expected")),
    "filler_sentence": Phrases(
        train=("the weather is nice today", "I need to buy some milk",
               "my train leaves at noon", "let us talk about music"),
        heldout=("the bus was full this morning", "I called my aunt last night",
                 "we might go hiking on sunday", "this soup needs more salt")),
    # visual_counting and visual_start_stop (typed)
    "count_instruction": Phrases(
        train=("count the repetitions", "count each repetition out loud",
               "say the count after every repetition"),
        heldout=("keep a running count of the repeats",
                 "tell me the number each time it repeats")),
    "startstop_instruction": Phrases(
        train=("say start when the {obj} {what} and stop when it stops",
               "say start as soon as the {obj} {what} and stop when it stops"),
        heldout=("when the {obj} {what}, say start, then say stop once it stops",
                 "call out start when the {obj} {what} and stop when it is still")),
    "startstop_object": Phrases(train=("ball", "box"), heldout=("dot", "block")),
    # delegation: the questions and the cities in them
    "calc_question": Phrases(
        train=("what is {a} times {b}", "tell me {a} times {b}"),
        heldout=("how much is {a} times {b}", "can you work out {a} times {b}",
                 "what do you get for {a} times {b}")),
    "weather_question": Phrases(
        train=("what is the weather in {city} right now", "what is the weather like in {city}"),
        heldout=("how is the weather in {city} today", "what is it like outside in {city}",
                 "tell me the weather for {city}")),
    "weather_city": Phrases(
        train=("paris", "tokyo", "lima", "oslo", "cairo"),
        heldout=("rome", "dublin", "nairobi", "hanoi")),
    "train_question": Phrases(
        train=("when does the next train to {city} leave", "when is the next train to {city}"),
        heldout=("when can I catch a train to {city}", "when does a train go to {city} next",
                 "how soon is the next train to {city}")),
    "train_city": Phrases(
        train=("boston", "denver", "austin", "seattle"),
        heldout=("chicago", "phoenix", "portland", "atlanta")),
}
# The rendered shape of each visual_start_stop object, both splits.
_OBJECT_SHAPE = {"ball": "circle", "dot": "circle", "box": "square", "block": "square"}


def _user(rng, ctx: Context, name: str) -> str:
  """A user-side phrase (or template, or slot word) from `ctx.split`'s half of `name`."""
  return _pick(rng, USER_PHRASES[name].of(ctx))


# ---- the model's lines (shared by both splits: what the model learns to say) -------

_ANSWERS = ["sure, the answer is quite simple", "well, let me think about that",
            "good question, here is what I know", "okay, I can help with that",
            "that depends on a few things", "here is a short answer for you"]
_LONG = ["the sky looks blue because air scatters short blue light more than red light "
         "so we see blue from every direction",
         "plants use sunlight water and air to make sugar in their leaves and they "
         "give off oxygen while doing it",
         "the moon is about three hundred eighty thousand kilometers away which "
         "light crosses in a little more than one second",
         "to make good tea you boil fresh water pour it over the leaves and wait "
         "three or four minutes before drinking"]
_RESUMES = ["okay, sure", "of course, let me try again", "sure, go ahead", "alright, what else"]
_DELEGATE_FILLERS = ["let me check", "one moment", "let me look that up"]
# Number words: the intervals in timespeak instructions (both splits) and the model's counts.
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven",
                 "eight", "nine", "ten", "eleven", "twelve"]


def _transcription(ep: Episode) -> list:
  return [{"speaker": 0, "item": [{"text": w["text"], "timestamp": [w["t_start"], w["t_end"]]}
                                  for p in ep.user_speech for w in p["words"]]}]


def _fdb_v1_refs(ep: Episode, task: str, task_json: list, until: float | None = None):
  """FD-bench v1 files of one sample: input.wav (cut at `until`), <task>.json, the
  user's word-timed transcription."""
  name = {"turn_taking": "turn_taking.json", "pause_handling": "pause.json",
          "user_interruption": "interrupt.json"}[task]
  audio = ep.user_audio if until is None else ep.user_audio[:int(round(until * SR))]
  return {"suite": f"fdb_v1/{task}", "files": {
      "input.wav": audio, name: task_json, "transcription.json": _transcription(ep)}}


# ---- conversation families -----------------------------------------------------

def turn_taking(rng, ctx):
  tl = Timeline(rng, ctx)
  q = tl.speak("user", _timing(rng, ctx, 0.2, 1.0), _user(rng, ctx, "question"))
  gap = _timing(rng, ctx, 0.2, 0.6)
  a = tl.speak("model", q["t_end"] + gap, _pick(rng, _ANSWERS))
  ep = tl.build(a["t_end"] + _timing(rng, ctx, 0.4, 1.0),
                {"user_turn_end": q["t_end"], "model_start": a["t_start"]})
  return ep, _fdb_v1_refs(ep, "turn_taking", [
      {"text": "[TURN-TAKING]", "timestamp": [q["t_end"], a["t_start"]]}])


def pause_handling(rng, ctx):
  tl = Timeline(rng, ctx)
  first = _user(rng, ctx, "pause_first")
  rest = _user(rng, ctx, "pause_rest")
  a = tl.speak("user", _timing(rng, ctx, 0.2, 1.0), first)
  pause = _timing(rng, ctx, 1.0, 2.5)
  b = tl.speak("user", a["t_end"] + pause, rest)
  r = tl.speak("model", b["t_end"] + _timing(rng, ctx, 0.2, 0.6), _pick(rng, _ANSWERS))
  ep = tl.build(r["t_end"] + _timing(rng, ctx, 0.3, 0.8),
                {"pause": [a["t_end"], b["t_start"]], "user_turn_end": b["t_end"],
                 "model_start": r["t_start"]})
  # The FDB input stops just after the user's last word: any model speech in
  # the reference output is then a take-over (FDB scores pause TOR over the whole output).
  return ep, _fdb_v1_refs(ep, "pause_handling", [
      {"text": "[PAUSE]", "timestamp": [a["t_end"], b["t_start"]]}], until=b["t_end"] + 0.2)


def user_interruption(rng, ctx):
  tl = Timeline(rng, ctx)
  q = tl.speak("user", _timing(rng, ctx, 0.2, 0.8), _user(rng, ctx, "question"))
  long_answer = tl.speak("model", q["t_end"] + _timing(rng, ctx, 0.2, 0.5), _pick(rng, _LONG))
  i0 = _timing(rng, ctx, long_answer["t_start"] + 1.0,
               max(long_answer["t_start"] + 1.2, long_answer["t_end"] - 1.0))
  context_text = long_answer["text"]
  interrupt = tl.speak("user", i0, _user(rng, ctx, "interrupt"))
  stop = i0 + _timing(rng, ctx, 0.2, 0.4)
  tl.cut_model(stop)
  r = tl.speak("model", interrupt["t_end"] + _timing(rng, ctx, 0.2, 0.5), _pick(rng, _RESUMES))
  ep = tl.build(r["t_end"] + _timing(rng, ctx, 0.3, 0.8), {
      "interrupt": [interrupt["t_start"], interrupt["t_end"]], "model_stop": stop,
      "model_response_start": r["t_start"]})
  return ep, _fdb_v1_refs(ep, "user_interruption", [
      {"context": q["text"] + " | " + context_text, "interrupt": interrupt["text"],
       "timestamp": [interrupt["t_start"], interrupt["t_end"]]}])


def backchannel(rng, ctx):
  tl = Timeline(rng, ctx)
  q = tl.speak("user", _timing(rng, ctx, 0.2, 0.8), _user(rng, ctx, "question"))
  ans = tl.speak("model", q["t_end"] + _timing(rng, ctx, 0.2, 0.5), _pick(rng, _LONG))
  clean_user = tl.user.copy()  # the user stream before any backchannel is added
  n_bc = int(rng.integers(1, 3))
  span = ans["t_end"] - ans["t_start"]
  bcs = []
  for k in range(n_bc):
    t = ans["t_start"] + span * (k + _timing(rng, ctx, 0.25, 0.6)) / n_bc
    bcs.append(tl.speak("user", t, _user(rng, ctx, "backchannel")))
  ep = tl.build(ans["t_end"] + _timing(rng, ctx, 0.4, 1.0), {
      "backchannels": [[b["t_start"], b["t_end"]] for b in bcs],
      "model_speech_continues": [ans["t_start"], ans["t_end"]]})
  clean = np.pad(clean_user, (0, len(ep.user_audio) - len(clean_user)))
  refs = {"suite": "fdb_v1_5/user_backchannel", "files": {
      "input.wav": ep.user_audio, "clean_input.wav": clean,
      "metadata.json": {"context_text": q["text"] + " | " + ans["text"],
                        "current_turn_text": bcs[0]["text"],
                        "timestamps": [bcs[0]["t_start"], bcs[0]["t_end"]]}}}
  return ep, refs


# ---- timing families -------------------------------------------------------------

def _instruction(tl: Timeline, rng, t0: float, text: str):
  """Typed or spoken instruction; returns (mode, [t0, t1])."""
  if rng.random() < 0.5:
    tl.typed(t0, text)
    # Typed text reaches the model two bytes per micro-turn (the user_text slots).
    return "text", [round(t0, 4), round(t0 + 0.2 * math.ceil(len(text.encode()) / 2), 4)]
  ph = tl.speak("user", t0, text)
  return "speech", [ph["t_start"], ph["t_end"]]


def _task_json(ctx, family, instruction, mode, itime, cue, targets, duration):
  return {"id": ctx.id, "family": family, "instruction": instruction,
          "instruction_mode": mode, "instruction_time": itime, "cue_word": cue,
          "targets": targets, "duration": round(duration, 4)}


def timespeak(rng, ctx):
  tl = Timeline(rng, ctx)
  t0 = _timing(rng, ctx, 0.2, 0.8)
  targets = []
  if rng.random() < 0.5:
    word = _user(rng, ctx, "timespeak_word")
    n = int(rng.integers(2, 4))
    text = _user(rng, ctx, "timespeak_periodic").format(word=word, n=_NUMBER_WORDS[n])
    mode, itime = _instruction(tl, rng, t0, text)
    k_max = int(rng.integers(2, 4))
    for k in range(1, k_max + 1):
      t = itime[1] + k * n
      tl.speak("model", t, word)
      targets.append({"text": word, "window": [round(t - 0.5, 4), round(t + 0.7, 4)]})
    stop = tl.speak("user", itime[1] + k_max * n + _timing(rng, ctx, 0.8, 1.5),
                    _user(rng, ctx, "timespeak_stop"))
    ack = tl.speak("model", stop["t_end"] + 0.3, "okay")
    end = ack["t_end"]
  else:
    n = int(rng.integers(3, 8))
    text = _user(rng, ctx, "timespeak_elapsed").format(n=_NUMBER_WORDS[n])
    mode, itime = _instruction(tl, rng, t0, text)
    t = itime[1] + n
    reply = f"{_NUMBER_WORDS[n]} seconds have passed"
    ph = tl.speak("model", t, reply)
    targets.append({"text": reply, "window": [round(t - 0.5, 4), round(t + 0.7, 4)]})
    end = ph["t_end"]
  dur = end + _timing(rng, ctx, 0.4, 1.0)
  # A target's reference time is the window's centre minus 0.1 s (window [t-0.5, t+0.7]).
  ep = tl.build(dur, {"instruction": text, "instruction_mode": mode,
                      "instruction_time": itime, "targets": targets})
  return ep, {"suite": "timespeak", "files": {
      "input.wav": ep.user_audio,
      "task.json": _task_json(ctx, "timespeak", text, mode, itime, None, targets, dur)}}


def cuespeak(rng, ctx):
  tl = Timeline(rng, ctx)
  cue = _user(rng, ctx, "cue_word")
  say = _user(rng, ctx, "cue_response")
  text = _user(rng, ctx, "cue_instruction").format(cue=cue, say=say)
  mode, itime = _instruction(tl, rng, _timing(rng, ctx, 0.2, 0.8), text)
  t = itime[1] + _timing(rng, ctx, 0.6, 1.2)
  targets = []
  n = int(rng.integers(3, 5))
  with_cue = rng.permutation([True] * max(1, n - 1) + [False] * (n - max(1, n - 1)))
  for has_cue in with_cue:
    if has_cue:
      ph = tl.speak("user", t, _user(rng, ctx, "cue_sentence").format(cue))
      w = next(w for w in ph["words"] if w["text"].lower() == cue)
      # The model answers right after the cue word, over the user if need be.
      at = w["t_end"] + _timing(rng, ctx, 0.15, 0.35)
      tl.speak("model", at, say)
      targets.append({"text": say, "window": [round(w["t_end"], 4), round(w["t_end"] + 1.5, 4)]})
    else:
      ph = tl.speak("user", t, _user(rng, ctx, "filler_sentence"))
    t = ph["t_end"] + _timing(rng, ctx, 0.7, 1.4)
  dur = max(tl.end(), t - 0.4)
  ep = tl.build(dur, {"instruction": text, "instruction_mode": mode,
                      "instruction_time": itime, "cue_word": cue, "response": say,
                      "targets": targets})
  return ep, {"suite": "cuespeak", "files": {
      "input.wav": ep.user_audio,
      "task.json": _task_json(ctx, "cuespeak", text, mode, itime, cue, targets, dur)}}


# ---- video families ---------------------------------------------------------------

def _render(positions: np.ndarray, rng, shape: str, distractors: int = 2) -> np.ndarray:
  """uint8 [N, H, W, 3]: a flat background, static distractors, one moving object.

  positions: [N, 2] (row, col) of the moving object's top-left corner.
  """
  h, w = VIDEO_HW
  bg = rng.integers(10, 70, 3).astype(np.uint8)
  base = np.empty((h, w, 3), np.uint8)
  base[:] = bg
  for _ in range(distractors):
    r, c = rng.integers(0, h - 16), rng.integers(0, w - 16)
    base[r:r + 14, c:c + 14] = rng.integers(80, 140, 3)
  size = 24
  mask = np.ones((size, size), bool)
  if shape == "circle":
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    mask = yy ** 2 + xx ** 2 <= (size / 2) ** 2
  color = rng.integers(170, 255, 3).astype(np.uint8)
  frames = np.repeat(base[None], len(positions), axis=0)
  for i, (r, c) in enumerate(np.rint(positions).astype(int)):
    r, c = int(np.clip(r, 0, h - size)), int(np.clip(c, 0, w - size))
    frames[i, r:r + size, c:c + size][mask] = color
  return frames


def visual_counting(rng, ctx):
  tl = Timeline(rng, ctx)
  n_reps = int(rng.integers(2, 7))
  kind = _pick(rng, ["bounce", "slide"])
  lead = rng.uniform(0.6, 1.5)
  periods = rng.uniform(0.8, 1.6) * rng.uniform(0.85, 1.15, n_reps)
  # Rep boundaries sit on frame times so the CSV's frame indices are exact.
  bounds = np.round((lead + np.concatenate([[0], np.cumsum(periods)])) * VIDEO_FPS) / VIDEO_FPS
  reps = [(float(bounds[k]), float(bounds[k + 1])) for k in range(n_reps)]
  tl.typed(0.0, _user(rng, ctx, "count_instruction"))
  for k, (_, e) in enumerate(reps):
    tl.speak("model", e + 0.3, _NUMBER_WORDS[k + 1])
  dur = max(tl.end(), bounds[-1]) + _timing(rng, ctx, 0.6, 1.2)
  n_frames = int(math.ceil(dur * VIDEO_FPS))
  times = np.arange(n_frames) / VIDEO_FPS
  phase = np.zeros(n_frames)
  for (s, e) in reps:
    inside = (times >= s) & (times < e)
    phase[inside] = np.sin(np.pi * (times[inside] - s) / (e - s)) ** 2
  h, w = VIDEO_HW
  amp = rng.uniform(40, 70)
  r0, c0 = rng.uniform(90, 120), rng.uniform(20, 110)
  if kind == "bounce":
    pos = np.stack([r0 - amp * phase, np.full(n_frames, c0)], 1)
  else:
    c0 = rng.uniform(10, 50)
    pos = np.stack([np.full(n_frames, r0 - 40), c0 + amp * phase], 1)
  video = _render(pos, rng, _pick(rng, ["square", "circle"]))
  frame_pairs = [[int(round(s * VIDEO_FPS)), int(round(e * VIDEO_FPS))] for s, e in reps]
  ep = tl.build(dur, {"count": n_reps, "type": kind, "reps": [list(r) for r in reps],
                      "rep_frames": frame_pairs, "fps": VIDEO_FPS}, video=video)
  row = [kind, ctx.id, n_reps] + [i for pair in frame_pairs for i in pair]
  return ep, {"suite": "repcount", "video": ("videos", ctx.id, video), "row": row}


def visual_start_stop(rng, ctx):
  tl = Timeline(rng, ctx)
  obj = _user(rng, ctx, "startstop_object")
  what = _pick(rng, ["moves", "shakes"])
  tl.typed(0.0, _user(rng, ctx, "startstop_instruction").format(obj=obj, what=what))
  t_s = round(rng.uniform(1.2, 3.0) * VIDEO_FPS) / VIDEO_FPS
  t_e = round((t_s + rng.uniform(1.5, 4.0)) * VIDEO_FPS) / VIDEO_FPS
  tl.speak("model", t_s + 0.3, "start")
  tl.speak("model", t_e + 0.3, "stop")
  dur = max(tl.end(), t_e) + _timing(rng, ctx, 0.8, 1.5)
  n_frames = int(math.ceil(dur * VIDEO_FPS))
  times = np.arange(n_frames) / VIDEO_FPS
  active = (times >= t_s) & (times < t_e)
  r0, c0 = rng.uniform(50, 100), rng.uniform(40, 90)
  freq = rng.uniform(0.7, 1.5)
  amp = 30 if what == "moves" else 8
  off = np.where(active, amp * np.sin(2 * np.pi * freq * (times - t_s)), 0.0)
  # A sine starts at 0: nudge the first active frame so the motion is visible at t_s.
  off[active] += np.where(off[active] >= 0, 3.0, -3.0)
  pos = np.stack([np.full(n_frames, r0), c0 + off], 1)
  video = _render(pos, rng, _OBJECT_SHAPE[obj])
  sentence = f"the {obj} {what}"
  ep = tl.build(dur, {"event": [t_s, t_e], "sentence": sentence}, video=video)
  return ep, {"suite": "charades", "video": ("videos", ctx.id, video),
              "line": f"{ctx.id} {t_s:.2f} {t_e:.2f}##{sentence}"}


# ---- delegation ---------------------------------------------------------------------

def _tool_question(rng, ctx):
  """(question the user asks, the model's answer, the tool's result text)."""
  kind = int(rng.integers(3))
  if kind == 0:
    a, b = int(rng.integers(12, 99)), int(rng.integers(12, 99))
    return (_user(rng, ctx, "calc_question").format(a=a, b=b), f"{a} times {b} is {a * b}",
            f"calc: {a}*{b} = {a * b}")
  if kind == 1:
    city = _user(rng, ctx, "weather_city")
    deg = int(rng.integers(-5, 35))
    sky = _pick(rng, ["sunny", "cloudy", "rainy"])
    return (_user(rng, ctx, "weather_question").format(city=city),
            f"it is {deg} degrees and {sky} in {city}",
            f"weather: {city} {deg}C {sky}")
  city = _user(rng, ctx, "train_city")
  hh, mm = int(rng.integers(1, 12)), int(rng.choice([0, 15, 30, 45]))
  return (_user(rng, ctx, "train_question").format(city=city),
          f"the next train to {city} leaves at {hh} {mm:02d}",
          f"trains: {city} {hh}:{mm:02d}")


# Seconds after the model's filler ends within which <delegate> counts as on time,
# and after the result is readable within which the answer must start (task.json).
DELEGATE_SLACK_S = 1.0
ANSWER_WINDOW_S = 3.0


def delegation(rng, ctx):
  tl = Timeline(rng, ctx)
  question, answer, result = _tool_question(rng, ctx)
  q = tl.speak("user", _timing(rng, ctx, 0.2, 0.8), question)
  filler = tl.speak("model", q["t_end"] + _timing(rng, ctx, 0.2, 0.5),
                    _pick(rng, _DELEGATE_FILLERS))
  delegate_t = filler["t_end"]
  tl.control(delegate_t, "<delegate>")
  arrive = delegate_t + _timing(rng, ctx, 0.8, 2.5)
  tl.result(arrive, result)
  # The result text drains into the model at 2 bytes per micro-turn first.
  readable = arrive + 0.2 * math.ceil(len(result.encode()) / 2)
  r = tl.speak("model", readable + _timing(rng, ctx, 0.2, 0.5), answer)
  duration = r["t_end"] + _timing(rng, ctx, 0.4, 1.0)
  ep = tl.build(duration, {
      "question": question, "delegate_time": delegate_t, "result_time": arrive,
      "result": result, "answer": answer, "answer_start": r["t_start"]})
  # The eval reference: <delegate> inside delegate_window, the tool result fed
  # to the model's background_text stream at its time, the spoken answer
  # starting inside answer_window. The result needs >= 0.8 s to arrive and
  # >= 1.8 s to drain (>= 17 bytes), so delegate_window ends before
  # answer_window starts.
  task = {"id": ctx.id, "family": "delegation", "question": question,
          "question_end": q["t_end"],
          "delegate_window": [q["t_end"], round(delegate_t + DELEGATE_SLACK_S, 4)],
          "background": [[round(arrive, 4), result]],
          "answer": answer,
          "answer_window": [round(readable, 4), round(readable + ANSWER_WINDOW_S, 4)],
          "duration": round(duration, 4)}
  return ep, {"suite": "delegation", "files": {"input.wav": ep.user_audio, "task.json": task}}


FAMILIES = {
    "turn_taking": turn_taking,
    "pause_handling": pause_handling,
    "user_interruption": user_interruption,
    "backchannel": backchannel,
    "timespeak": timespeak,
    "cuespeak": cuespeak,
    "visual_counting": visual_counting,
    "visual_start_stop": visual_start_stop,
    "delegation": delegation,
}
