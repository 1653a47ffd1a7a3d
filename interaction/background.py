"""The background model: deep work handed off by the interaction model.

When a session's model emits `<delegate>`, the `BackgroundRunner` starts a job:
it calls `model.submit(context)` with the whole conversation so far and feeds
each text update the job yields into that session's `background_text` input
stream, in later micro-turns, while the interaction model keeps stepping (the
job is an asyncio task; nothing waits for it). `<cancel>` from the model (or
`cancel(key)`) stops the session's running jobs.

A background model is anything with

    def submit(self, context: dict) -> AsyncIterator[str]

context: {"session", "job", "t" (session seconds of the `<delegate>`),
"conversation": [{"t", "speaker": "user" | "model" | "background", "text"}],
"task": {...}} (task metadata: the session's prompt, "model_said": the model's
last phrase before delegating, "query" when the caller knows the question).

Implementations: `ToolAgent` (local, deterministic tools: calculator, clock and
timer, search over a local text corpus; `delay_s` to answer late), the text LM
of `interaction.text_lm` (greedy decoding with our own transformer), and
`CallableAgent`, the adapter slot for external APIs (wraps any function of a
prompt; none is called in tests).
"""

from __future__ import annotations

import ast
import asyncio
import collections
import inspect
import math
import operator
import re
import time
from typing import AsyncIterator, Callable, Protocol

from interaction.tokenizer import TOKENIZER


class BackgroundModel(Protocol):
  def submit(self, context: dict) -> AsyncIterator[str]:
    ...


# ---------------------------------------------------------------------------
# The conversation a job sees
# ---------------------------------------------------------------------------
class Conversation:
  """Both sides' text with timestamps, as the session goes (host side)."""

  def __init__(self, max_entries: int = 2000):
    self.entries = collections.deque(maxlen=max_entries)
    self._model_words = []
    self._model_t = None

  def add(self, t: float, speaker: str, text: str):
    if speaker == "model":
      # Model words arrive one event at a time: keep one entry per phrase.
      if self._model_t is None:
        self._model_t = t
      self._model_words.append(text)
      return
    self.flush()
    if text:
      self.entries.append({"t": round(float(t), 3), "speaker": speaker, "text": text})

  def flush(self):
    if self._model_words:
      self.entries.append({"t": round(float(self._model_t), 3), "speaker": "model",
                           "text": " ".join(self._model_words)})
    self._model_words, self._model_t = [], None

  def snapshot(self) -> list:
    self.flush()
    return list(self.entries)


def render(conversation: list, max_chars: int | None = None) -> str:
  """The conversation as plain text lines ("[12.4 s] user: ..."), newest last."""
  lines = [f"[{e['t']:.1f} s] {e['speaker']}: {e['text']}" for e in conversation]
  text = "\n".join(lines)
  return text if max_chars is None else text[-max_chars:]


# ---------------------------------------------------------------------------
# The runner a session calls
# ---------------------------------------------------------------------------
class _Job:
  def __init__(self, job_id, task):
    self.id = job_id
    self.task = task


class BackgroundRunner:
  """Starts, feeds back and cancels background jobs for many sessions.

  Call `on_output(key, tokens, t, conversation, task)` from the event loop
  after every micro-turn of a session: it starts a job on `<delegate>` and
  cancels on `<cancel>`; `take(key)` returns the updates that arrived since
  (the text to queue on the session's background_text stream) and
  `take_events(key)` the job status events (started, done, cancelled, error).
  """

  def __init__(self, model: BackgroundModel, *, max_jobs: int = 2,
               max_update_bytes: int = 1024):
    self.model = model
    self.max_jobs = int(max_jobs)
    self.max_update_bytes = int(max_update_bytes)
    self._jobs: dict = collections.defaultdict(dict)      # key -> {job id: _Job}
    self._updates: dict = collections.defaultdict(list)
    self._events: dict = collections.defaultdict(list)
    self._next_id = collections.Counter()

  def running(self, key) -> int:
    return len(self._jobs.get(key, {}))

  def on_output(self, key, tokens, t: float, conversation: list, task: dict | None = None):
    tokens = [int(x) for x in tokens]
    if TOKENIZER.cancel_id in tokens:
      self.cancel(key, t)
    if TOKENIZER.delegate_id in tokens:
      self.delegate(key, t, conversation, task)

  def delegate(self, key, t: float, conversation: list, task: dict | None = None):
    if self.running(key) >= self.max_jobs:
      self._event(key, t, f"refused: {self.max_jobs} jobs already running", None)
      return None
    self._next_id[key] += 1
    job_id = self._next_id[key]
    context = {"session": key if isinstance(key, str) else str(key), "job": job_id,
               "t": float(t), "conversation": list(conversation),
               "task": dict(task or {})}
    task_ = asyncio.get_running_loop().create_task(self._run(key, job_id, context))
    self._jobs[key][job_id] = _Job(job_id, task_)
    self._event(key, t, "started", job_id)
    return job_id

  async def _run(self, key, job_id, context):
    try:
      async for update in self.model.submit(context):
        if not isinstance(update, str):
          raise TypeError(f"background model yielded {type(update).__name__}, not str")
        data = update.encode("utf-8")[:self.max_update_bytes]
        self._updates[key].append((job_id, data.decode("utf-8", errors="ignore")))
      self._event(key, None, "done", job_id)
    except asyncio.CancelledError:
      self._event(key, None, "cancelled", job_id)
      raise
    except Exception as e:  # a failing job must not take the session down
      self._event(key, None, f"error: {type(e).__name__}: {e}", job_id)
    finally:
      self._jobs.get(key, {}).pop(job_id, None)

  def cancel(self, key, t: float | None = None) -> int:
    jobs = list(self._jobs.get(key, {}).values())
    for job in jobs:
      job.task.cancel()
    return len(jobs)

  def take(self, key) -> tuple[str | None, list]:
    """(text to feed on background_text or None, [(job id, text)] it came from)."""
    ups = self._updates.pop(key, [])
    return ("".join(u for _, u in ups) or None), ups

  def take_events(self, key) -> list:
    return self._events.pop(key, [])

  def _event(self, key, t, status, job_id):
    self._events[key].append({"job": job_id, "status": status, "t": t})

  def close(self, key):
    """Cancels the session's jobs and forgets it."""
    self.cancel(key)
    self._updates.pop(key, None)
    self._events.pop(key, None)
    self._next_id.pop(key, None)

  async def aclose(self):
    tasks = [j.task for jobs in self._jobs.values() for j in jobs.values()]
    for task in tasks:
      task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------
# A tool agent with local, deterministic tools
# ---------------------------------------------------------------------------
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv,
        ast.Mod: operator.mod, ast.Pow: operator.pow, ast.USub: operator.neg,
        ast.UAdd: operator.pos}
_WORD_OPS = [(r"\bdivided by\b", "/"), (r"\bover\b", "/"), (r"\btimes\b", "*"),
             (r"\bmultiplied by\b", "*"), (r"\bplus\b", "+"), (r"\bminus\b", "-"),
             (r"\bto the power of\b", "**"), (r"\bx\b", "*")]
_ARITH = re.compile(r"[-+*/%().\d\s]*\d[-+*/%().\d\s]*")


def calculate(expression: str) -> float | int:
  """Arithmetic only (+ - * / // % ** and parentheses), no names or calls."""
  tree = ast.parse(expression.strip(), mode="eval")

  def ev(node):
    if isinstance(node, ast.Expression):
      return ev(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
        and not isinstance(node.value, bool):
      return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
      a, b = ev(node.left), ev(node.right)
      if isinstance(node.op, ast.Pow) and abs(b) > 64:
        raise ValueError("exponent too large")
      return _OPS[type(node.op)](a, b)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
      return _OPS[type(node.op)](ev(node.operand))
    raise ValueError(f"not arithmetic: {ast.dump(node)[:40]}")

  return ev(tree)


def _format_number(x) -> str:
  if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
    return str(int(x))
  return f"{x:.6g}" if isinstance(x, float) else str(x)


def _words(text: str) -> list:
  return re.findall(r"[a-z0-9]+", text.lower())


class Corpus:
  """Search over local text documents: term overlap weighted by idf."""

  def __init__(self, documents: list[str]):
    """documents: texts; each paragraph (blank-line separated) is one hit."""
    self.docs = [p.strip() for d in documents for p in re.split(r"\n\s*\n", d)
                 if p.strip()]
    self.terms = [set(_words(d)) for d in self.docs]
    df = collections.Counter(t for terms in self.terms for t in terms)
    n = max(1, len(self.docs))
    self.idf = {t: math.log(1 + n / c) for t, c in df.items()}

  @classmethod
  def from_dir(cls, path: str) -> "Corpus":
    """One document per paragraph of every .txt file under `path` (sorted)."""
    import os
    docs = []
    for root, _, files in sorted(os.walk(path)):
      for name in sorted(files):
        if name.endswith(".txt"):
          with open(os.path.join(root, name), encoding="utf-8") as f:
            docs.append(f.read())
    return cls(docs)

  def search(self, query: str, k: int = 1) -> list[str]:
    q = set(_words(query))
    scored = [(sum(self.idf.get(t, 0.0) for t in q & terms), -i, doc)
              for i, (terms, doc) in enumerate(zip(self.terms, self.docs))]
    scored = [s for s in scored if s[0] > 0]
    scored.sort(reverse=True)
    return [doc for _, _, doc in scored[:k]]


class ToolAgent:
  """Picks a local tool from the query and answers in the generators' formats
  ("calc: 12*34 = 408"). Deterministic given the query and the clock.

  query: context["task"]["query"] if set, else the latest user text (typed:
  the server has no speech recogniser), else the latest model text. Tools, first match wins:
  an arithmetic expression (digits and + - * / or the words times, plus, ...)
  -> calculator; "timer" with a number of seconds -> a timer that reports when
  it is set and when it rings; "time"/"clock" -> the clock; anything else ->
  search over `corpus`. delay_s: wait this long before answering (a slow tool).
  now: the clock (seconds since the epoch; injectable for tests).
  """

  def __init__(self, corpus: Corpus | list[str] | None = None, *, delay_s: float = 0.0,
               now: Callable[[], float] = time.time, timer_scale: float = 1.0):
    self.corpus = corpus if isinstance(corpus, Corpus) else Corpus(list(corpus or []))
    self.delay_s = float(delay_s)
    self.now = now
    self.timer_scale = float(timer_scale)

  @staticmethod
  def query(context: dict) -> str:
    """task["query"], else the latest user text, else the latest model text."""
    q = (context.get("task") or {}).get("query")
    if q:
      return str(q)
    conv = context.get("conversation") or []
    for speaker in ("user", "model"):
      for e in reversed(conv):
        if e["speaker"] == speaker and e["text"].strip():
          return e["text"]
    return ""

  def answer(self, query: str) -> tuple[str, float | None]:
    """(first update, seconds until a second one or None) for a query."""
    q = query.lower()
    expr = q
    for pattern, op in _WORD_OPS:
      expr = re.sub(pattern, op, expr)
    m = re.search(r"timer\D*(\d+(?:\.\d+)?)", q)
    if m:
      secs = float(m.group(1))
      return f"timer: set for {_format_number(secs)} s", secs
    for cand in sorted(_ARITH.findall(expr), key=len, reverse=True):
      cand = cand.strip()
      if re.search(r"\d\s*[-+*/%]", cand):
        try:
          value = calculate(cand)
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError) as e:
          return f"calc: {cand} failed ({type(e).__name__})", None
        return f"calc: {re.sub(r'\s+', '', cand)} = {_format_number(value)}", None
    if re.search(r"\b(time|clock)\b", q):
      return "clock: " + time.strftime("%H:%M:%S", time.gmtime(self.now())) + " UTC", None
    hits = self.corpus.search(query)
    return ("search: " + (hits[0] if hits else f"nothing found for {query!r}")), None

  async def submit(self, context: dict) -> AsyncIterator[str]:
    if self.delay_s > 0:
      await asyncio.sleep(self.delay_s)
    text, then = self.answer(self.query(context))
    yield text
    if then is not None:
      await asyncio.sleep(then * self.timer_scale)
      yield f"timer: {_format_number(then)} s done"


class CallableAgent:
  """Adapter slot for external APIs: `fn(prompt) -> str`, an awaitable of one,
  or an (async) iterator of text updates. Sync functions run in a thread, so a
  slow HTTP call never blocks the sessions. prompt: the rendered conversation
  (last `max_chars`) followed by the task's query."""

  def __init__(self, fn: Callable, *, max_chars: int = 8000):
    self.fn = fn
    self.max_chars = int(max_chars)

  def prompt(self, context: dict) -> str:
    query = ToolAgent.query(context)
    return (render(context.get("conversation") or [], self.max_chars)
            + f"\n\nTask: {query}\n")

  async def submit(self, context: dict) -> AsyncIterator[str]:
    prompt = self.prompt(context)
    if inspect.iscoroutinefunction(self.fn) or inspect.isasyncgenfunction(self.fn):
      result = self.fn(prompt)
    else:
      result = await asyncio.to_thread(self.fn, prompt)
    if inspect.isawaitable(result):
      result = await result
    if isinstance(result, str):
      yield result
    elif hasattr(result, "__aiter__"):
      async for x in result:
        yield x
    else:
      for x in result:
        yield x
