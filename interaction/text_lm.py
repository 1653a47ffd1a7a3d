"""A text-only language model served from our own transformer, as a background model.

`TextLM(config, params)` reads the conversation as bytes on the user_text
stream and writes greedily on the model_text stream of an interaction model's
checkpoint (no audio, no video, every slot at time 0, consecutive RoPE
positions): one jitted prefill of a fixed `context_tokens` window (the last
bytes of the rendered conversation), then one jitted single-token decode per
new token into a KV cache sized for both. It stops at `<eos>` or after
`max_new_tokens`; special tokens are dropped from the text. Decoding runs in a
worker thread, `update_tokens` tokens at a time, and each batch of new text is
one update of the job, so the event loop and the sessions keep running.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import jax
import jax.numpy as jnp
import numpy as np

from interaction import params as params_lib
from interaction.background import ToolAgent, render
from interaction.layout import Stream
from interaction.tokenizer import TOKENIZER


class TextLM:

  def __init__(self, config, params, *, context_tokens: int = 256,
               max_new_tokens: int = 64, update_tokens: int = 16):
    if context_tokens < 1 or max_new_tokens < 1 or update_tokens < 1:
      raise ValueError("TextLM: context_tokens, max_new_tokens and update_tokens "
                       "must be >= 1")
    self.config, self.params = config, params
    self.context_tokens = int(context_tokens)
    self.max_new_tokens = int(max_new_tokens)
    self.update_tokens = int(update_tokens)
    binder = params_lib.ModelBinder(config)
    model = binder(params)
    split = model.numerics.split_size
    self.capacity = -(-(self.context_tokens + self.max_new_tokens) // split) * split
    user_id, model_id = int(Stream.USER_TEXT), int(Stream.MODEL_TEXT)
    n_ctx = self.context_tokens
    cap = self.capacity

    def embed(m, tokens, stream_id):
      x = m.text(tokens).astype(m.dtype)
      ids = jnp.full((tokens.shape[1],), stream_id, jnp.int32)
      return m.embed_slots(x, ids, jnp.zeros(tokens.shape, jnp.float32))

    def prefill(params, tokens, n):
      m = binder(params)
      cache = m.init_cache(1, cap)
      positions = jnp.arange(n_ctx, dtype=jnp.int32)[None]
      h, cache, _ = m.backbone(embed(m, tokens, user_id), positions, cache,
                               jnp.zeros((1,), jnp.int32))
      last = jax.lax.dynamic_index_in_dim(h[0], n - 1, keepdims=False)
      return jnp.argmax(m.text_logits(last[None]), -1).astype(jnp.int32), cache

    def decode(params, cache, tok, pos):
      m = binder(params)
      h, cache, _ = m.backbone(embed(m, tok[:, None], model_id), pos[None, None],
                               cache, pos[None])
      return jnp.argmax(m.text_logits(h[:, 0]), -1).astype(jnp.int32), cache

    self._prefill = jax.jit(prefill)
    self._decode = jax.jit(decode, donate_argnums=1)

  def _prompt_ids(self, text: str) -> tuple[np.ndarray, int]:
    ids = TOKENIZER.encode(text)[-self.context_tokens:] or [TOKENIZER.special_id("<bos>")]
    n = len(ids)
    padded = np.full((1, self.context_tokens), TOKENIZER.empty_id, np.int32)
    padded[0, :n] = ids
    return padded, n

  def generate(self, text: str):
    """Yields the greedy continuation's token ids one at a time (blocking)."""
    tokens, n = self._prompt_ids(text)
    tok, cache = self._prefill(self.params, jnp.asarray(tokens), jnp.int32(n))
    eos = TOKENIZER.special_id("<eos>")
    for i in range(self.max_new_tokens):
      t = int(tok[0])
      if t == eos:
        return
      yield t
      if i + 1 < self.max_new_tokens:
        tok, cache = self._decode(self.params, cache, tok, jnp.int32(n + i))

  def complete(self, text: str) -> str:
    return TOKENIZER.decode(list(self.generate(text)))

  def prompt(self, context: dict) -> str:
    query = ToolAgent.query(context)
    return render(context.get("conversation") or []) + f"\ntask: {query}\nanswer: "

  async def submit(self, context: dict) -> AsyncIterator[str]:
    gen = self.generate(self.prompt(context))

    def next_batch():
      out = []
      for tok in gen:
        out.append(tok)
        if len(out) >= self.update_tokens:
          break
      return out

    while True:
      batch = await asyncio.to_thread(next_batch)
      text = TOKENIZER.decode(batch)
      if text:
        yield text
      if len(batch) < self.update_tokens:
        return
