"""The rule judge's grades and the LLM adapter's parsing."""

import pytest

from eval import text as text_lib
from eval.judges import LLMJudge, RuleJudge, make_judge


def test_text_normalisation_numbers():
  assert text_lib.tokens("Forty-two apples, please!") == ["42", "apples", "please"]
  assert text_lib.tokens("one hundred and five") == ["105"]
  assert text_lib.normalize(text_lib.number_to_words(73)) == "73"


@pytest.mark.parametrize("ref, pred, grade", [
    ("The cat jumps onto the table.", "the cat jumps onto the table", 3),  # exact
    ("42", "The answer is forty two.", 3),                                  # contained
    ("The cat jumps onto the table.", "a cat is on a chair", 2),            # partial
    ("The cat jumps onto the table.", "it is raining", 1),                  # wrong
    ("banana", "", 1),                                                      # nothing
])
def test_rule_judge_grades(ref, pred, grade):
  assert RuleJudge().grade(ref, pred, scale=(1, 3)) == grade


def test_rule_judge_match_is_strict():
  j = RuleJudge()
  assert j.matches("got it", "Got it!")
  assert not j.matches("got it", "got")
  assert not j.matches("5", "15")


def test_llm_adapter_parses_published_reply_formats():
  calls = []

  def fake(system, user):
    calls.append(system)
    if "rate the quality" in system:
      return "Analysis: fine.\nI would rate the AI's response as 4."
    if "Answer with the tag" in system:
      return "C_RESUME"
    return "Score: 3"
  j = LLMJudge(fake, "fake-model")
  assert j.name == "LLM (fake-model)"
  assert j.grade("a", "b", scale=(1, 3)) == 3
  assert j.grade("a", "b", scale=(0, 5)) == 4
  assert j.matches("a", "b")
  assert j.behavior(overlap=(0, 1), words=[], current_turn_text="", context_text="") == "C_RESUME"
  with pytest.raises(ValueError, match="parseable"):
    LLMJudge(lambda s, u: "no idea", "x", retries=2).grade("a", "b")
  with pytest.raises(ValueError, match="unknown judge"):
    make_judge("gpt")
