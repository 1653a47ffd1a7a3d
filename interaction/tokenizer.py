"""Byte-level UTF-8 text tokenizer with the interaction model's special tokens.

Ids 0..255 are raw bytes; the specials follow. No training and no download, so
every machine builds the same vocabulary. The vocabulary is padded to a multiple
of 8 so the unembedding matmul has friendly shapes.
"""

from __future__ import annotations

import dataclasses

NUM_BYTES = 256

# Order matters: ids are assigned in this order after the 256 byte ids.
SPECIAL_TOKENS = (
    "<pad>",       # model_text slot while the model is silent
    "<empty>",     # an input text slot with nothing typed / no background result
    "<bos>",
    "<eos>",
    "<epad>",      # end of a spoken phrase inside the inner monologue
    "<delegate>",  # hand the conversation to the background model
    "<unk>",
    "<cancel>",    # stop the running background job(s); fills the vocabulary's
                   # padding (263 -> 264 ids either way), so no config changes
)


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """Byte tokenizer: `encode` -> list[int], `decode` drops special ids."""

  def __post_init__(self):
    object.__setattr__(
        self, "_special_ids",
        {tok: NUM_BYTES + i for i, tok in enumerate(SPECIAL_TOKENS)})

  @property
  def vocab_size(self) -> int:
    raw = NUM_BYTES + len(SPECIAL_TOKENS)
    return (raw + 7) // 8 * 8

  def special_id(self, token: str) -> int:
    try:
      return self._special_ids[token]
    except KeyError:
      raise ValueError(
          f"unknown special token {token!r}; known: {SPECIAL_TOKENS}") from None

  @property
  def pad_id(self) -> int:
    return self.special_id("<pad>")

  @property
  def empty_id(self) -> int:
    return self.special_id("<empty>")

  @property
  def delegate_id(self) -> int:
    return self.special_id("<delegate>")

  @property
  def cancel_id(self) -> int:
    return self.special_id("<cancel>")

  def is_special(self, token_id: int) -> bool:
    return token_id >= NUM_BYTES

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids) -> str:
    """Decodes byte ids; special ids are dropped, broken UTF-8 is replaced."""
    data = bytes(int(i) for i in ids if 0 <= int(i) < NUM_BYTES)
    return data.decode("utf-8", errors="replace")

  def token_to_str(self, token_id: int) -> str:
    """A printable form of one id (specials by name), for events and logs."""
    token_id = int(token_id)
    if token_id < NUM_BYTES:
      return bytes([token_id]).decode("latin-1")
    idx = token_id - NUM_BYTES
    return SPECIAL_TOKENS[idx] if idx < len(SPECIAL_TOKENS) else "<unused>"


TOKENIZER = ByteTokenizer()


def encode_event(text: str) -> list[int]:
  """Token ids of one text event: a special token name maps to its id, else bytes."""
  if text in SPECIAL_TOKENS:
    return [TOKENIZER.special_id(text)]
  return TOKENIZER.encode(text)
