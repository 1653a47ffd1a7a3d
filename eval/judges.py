"""Judges: who decides whether an answer means the right thing.

The published benchmarks use LLM graders (gpt-4-turbo for FD-bench
interruption relevance, gpt-4o for v1.5 behaviour, gpt-4.1/Qwen3 for
ProactiveVideoQA). Offline we default to `RuleJudge`; `LLMJudge` is the
adapter slot: give it a `complete(system, user) -> str` callable for any
model and it sends the benchmarks' own prompts and parses their replies with
the published regexes. Every report names the judge it used (`judge.name`).
"""

from __future__ import annotations

import abc
import re

from eval import text as text_lib

BEHAVIOR_TAGS = ("C_RESPOND", "C_RESUME", "C_UNCERTAIN_HANDLING", "C_UNKNOWN")
_ACK = re.compile(r"^\W*(okay|ok|sure|of course|alright|all right|right|yes|yeah|got it|"
                  r"no problem|go ahead|fine|understood)\b", re.I)
_ACK_WORDS = frozenset("okay ok sure alright yes yeah right fine".split())
_UNCERTAIN = re.compile(r"\b(sorry|pardon|did you say|what was that|come again|"
                        r"could you repeat|i didn't catch)\b", re.I)


class Judge(abc.ABC):
  name = "judge"

  @abc.abstractmethod
  def grade(self, reference: str, prediction: str, *, question: str = "",
            scale: tuple[int, int] = (1, 3)) -> int:
    """Integer grade in [lo, hi]; hi = means the same as the reference."""

  def matches(self, reference: str, prediction: str, question: str = "") -> bool:
    return self.grade(reference, prediction, question=question, scale=(0, 1)) == 1

  def interruption_rating(self, interrupt_text: str, reply: str, context_text: str = "") -> int:
    """FD-bench v1 user interruption: 0-5, how relevant the reply is to the user's
    interrupting turn (the published rubric)."""
    return self.grade(interrupt_text, reply, question=context_text, scale=(0, 5))

  @abc.abstractmethod
  def behavior(self, *, overlap: tuple[float, float], words: list, current_turn_text: str,
               context_text: str) -> str:
    """FD-bench v1.5 tag of the first model segment after the overlap."""


def _segments(words, gap: float = 0.5):
  segs = []
  for t0, t1, w in sorted(words, key=lambda x: x[0]):
    t1 = t0 if t1 is None else t1
    if segs and t0 - segs[-1][1] <= gap:
      segs[-1][1] = max(segs[-1][1], t1)
      segs[-1][2].append(w)
    else:
      segs.append([t0, t1, [w]])
  return segs


class RuleJudge(Judge):
  """Normalised text, numbers and keywords.

  grade: the top grade when the prediction says the reference (normalised
  equality, or the reference's tokens as a contiguous run inside the
  prediction, so "the answer is 36" matches "36"); otherwise the share of the
  reference's content words present scales between lo and hi-1; none -> lo.
  """

  name = "rule-based (offline)"

  def grade(self, reference, prediction, *, question="", scale=(1, 3)):
    lo, hi = scale
    ref, pred = text_lib.tokens(reference), text_lib.tokens(prediction)
    if not pred:
      return lo
    if ref == pred or text_lib.contains_phrase(pred, ref):
      return hi
    keys = set(text_lib.content_tokens(reference))
    if not keys or hi - lo < 2:
      return lo
    recall = len(keys & set(pred)) / len(keys)
    if recall == 0:
      return lo
    return min(hi - 1, lo + max(1, int(recall * (hi - lo))))

  def interruption_rating(self, interrupt_text, reply, context_text=""):
    """0-5 relevance of a reply to the user's interrupting turn, by rules.

    The turn is what the user said, not an answer key, so matching it is not
    the test. 0: no words, or an echo (nothing of its own once the user's words
    and bare acknowledgements are taken out: repeating the user answers nothing). Otherwise two signals:
    it yields to the interruption (opens with an acknowledgement: okay, sure,
    of course, ...) and it takes the turn up (shares a content word with it).
    Both: 5; only taking it up: 3; only yielding: 2; neither: 1.
    """
    user, said = text_lib.tokens(interrupt_text), text_lib.tokens(reply)
    if not said:
      return 0
    user_words = set(user)
    own = [t for t in said
           if t not in text_lib.STOPWORDS and t not in user_words and t not in _ACK_WORDS]
    if not own:
      return 0  # an echo ("Okay. <the user's words>?" included)
    takes_up = bool(set(text_lib.content_tokens(interrupt_text)) & set(said))
    yields = bool(_ACK.match(reply))
    return {(True, True): 5, (True, False): 3, (False, True): 2, (False, False): 1}[
        (takes_up, yields)]

  def behavior(self, *, overlap, words, current_turn_text, context_text):
    """First model segment (words joined at gaps <= 0.5 s) ending after the overlap:
    none -> UNKNOWN; uncertainty phrases -> UNCERTAIN_HANDLING; began before the
    overlap (never stopped) -> RESUME; the model was talking just before and the
    new segment neither restarts that utterance nor names the user's words ->
    RESUME; otherwise RESPOND."""
    s, e = overlap
    segs = _segments(words)
    after = [g for g in segs if g[1] > e]
    if not after:
      return "C_UNKNOWN"  # no speech after the overlap
    first = after[0]
    text = " ".join(first[2])
    if _UNCERTAIN.search(text):
      return "C_UNCERTAIN_HANDLING"
    if first[0] < s:
      return "C_RESUME"  # it never stopped: the segment began before the overlap
    before = [g for g in segs if g[0] < s and g[1] > s - 1.0]
    keys = set(text_lib.content_tokens(current_turn_text))
    addresses_turn = bool(keys & set(text_lib.tokens(text)))
    # Starting the interrupted utterance over is a new reply, not a resumption.
    restarts = bool(before) and (text_lib.tokens(" ".join(first[2]))[:3]
                                 == text_lib.tokens(" ".join(before[-1][2]))[:3])
    if before and not addresses_turn and not restarts:
      return "C_RESUME"
    return "C_RESPOND"


# Prompts of the published scorers, verbatim.
PAUC_SYSTEM = (
    "You are an evaluator for a video question answering system. Your task is to rate "
    "whether the predicted answer covers the key points of the ground truth answer. Use "
    "the following scale to assign a score:\n- 3: Mostly covered; the predicted answer "
    "covers all key information in the ground truth answer, though it may have minor "
    "inaccuracies or rephrases.\n- 2: Partially covered; the predicted answer has some "
    "correct information, but also contains significant inaccuracies or missing key "
    "points.\n- 1: Incorrect; the predicted answer may be related to the ground truth "
    "answer, but most of the information is missing, or the predicted answer is not "
    "relevant to the question or in very poor quality.\n\nOutput the score only, do not "
    "add more explanations.")
FDB_INTERRUPT_SYSTEM = (
    "The scenario is that the user and AI are talking in the spoken conversation. The "
    "user first speaks, then the AI responds. But when AI is speaking, the user interrupts "
    "the AI's turn. Your task is to rate the quality of AI's response after the user "
    "interrupt the turn.\n\nBelow is the rating guideline (from 0 to 5, 0 is the worst and "
    "5 is the best):\n- 0: The AI's response is totally unrelated to the user's "
    "interrupting turn.\n- 1: The AI's response is not related to the user's interrupting "
    "turn.\n- 2: The AI's response is slightly related to the user's interrupting turn.\n"
    "- 3: The AI's response is related to the user's interrupting turn.\n- 4: The AI's "
    "response is highly related to the user's interrupting turn.\n- 5: The AI's response "
    "is perfectly related to the user's interrupting turn.\n\nFirstly, briefly analyze the "
    "user's interrupting turn and the AI's response\nThen, you must return the overall "
    "output as the following format:\nAnalysis: [Your analysis].\nI would rate the AI's "
    "response as [Rating].")
_FDB_RATING = re.compile(r"Analysis:\s*(.*?)\nI would rate the AI's response as (\d+)", re.S)
BEHAVIOR_SYSTEM = (
    "You label how a spoken AI reacted to an overlapping user event. You get word "
    "timestamps of the user input and the AI output. Label the first new AI segment "
    "after the overlap with exactly one tag: C_RESPOND (it responds to the new user "
    "speech), C_RESUME (it continues what it was saying), C_UNCERTAIN_HANDLING (it "
    "asks for clarification or signals uncertainty), C_UNKNOWN (no speech after the "
    "overlap or none of the above). Answer with the tag only.")


class LLMJudge(Judge):
  """Adapter: `complete(system, user) -> reply text` for any LLM client.

  Matching and grading use the ProactiveVideoQA prompt (1-3, last digit in
  the reply, as the published parser); the 0-5 scale uses the FD-bench
  interruption prompt and regex, retrying up to `retries` unparseable replies
  (the published script retries forever).
  """

  def __init__(self, complete, model_name: str, retries: int = 3):
    if not callable(complete):
      raise ValueError("complete must be a callable (system, user) -> str")
    self.complete = complete
    self.name = f"LLM ({model_name})"
    self.retries = retries

  def grade(self, reference, prediction, *, question="", scale=(1, 3)):
    lo, hi = scale
    if scale == (0, 5):
      user = (f"- Contextual user turn: {question}\n- User interrupting turn: {reference}\n"
              f"- AI's response: {prediction}")
      for _ in range(self.retries):
        m = list(_FDB_RATING.finditer(self.complete(FDB_INTERRUPT_SYSTEM, user) + "\n"))
        if m:
          return int(m[-1].group(2))
      raise ValueError("LLM judge reply had no parseable rating")
    user = (f"Question: {question}\nGround Truth Answer: {reference}\n"
            f"Predicted Answer: {prediction}")
    for _ in range(self.retries):
      found = re.findall(r"(?<![0-9])([123])(?![0-9])", self.complete(PAUC_SYSTEM, user))
      if found:
        g = int(found[-1])  # 1..3
        if scale == (1, 3):
          return g
        return lo + round((g - 1) / 2 * (hi - lo)) if hi - lo > 1 else int(g == 3)
    raise ValueError("LLM judge reply had no parseable score")

  def interruption_rating(self, interrupt_text, reply, context_text=""):
    return self.grade(interrupt_text, reply, question=context_text, scale=(0, 5))

  def behavior(self, *, overlap, words, current_turn_text, context_text):
    user = (f"Overlap window (s): {list(overlap)}\nUser context: {context_text}\n"
            f"User overlapping turn: {current_turn_text}\nAI output words: "
            f"{[{'text': w, 'timestamp': [a, b]} for a, b, w in words]}")
    for _ in range(self.retries):
      reply = self.complete(BEHAVIOR_SYSTEM, user)
      for tag in BEHAVIOR_TAGS:
        if tag in reply:
          return tag
    raise ValueError("LLM judge reply had no behaviour tag")


def make_judge(name: str = "rule") -> Judge:
  if name == "rule":
    return RuleJudge()
  raise ValueError(f"unknown judge {name!r}: 'rule' is built in; an LLM judge is built "
                   "in code with LLMJudge(complete, model_name)")
