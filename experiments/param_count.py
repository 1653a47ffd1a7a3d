r"""Print total and active parameter counts: `python -m experiments.param_count --config=FILE`.

Shapes come from `nnx.eval_shape`, so nothing is allocated even for the
276B-parameter `tml_small`. Active parameters are the ones one token uses:
everything except the routed experts that top-k routing leaves out, i.e.
total - (E - k) * (params of one routed expert) in every MoE layer.
"""

import json

from flax import nnx
from ml_collections import config_flags

from experiments import cli
from interaction.params import abstract_model, count_params

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)


def parameter_counts(config) -> dict:
  model = abstract_model(config)
  total = count_params(nnx.state(model, nnx.Param))
  m = config.model
  moe_layers = (max(m.num_layers - m.first_dense_layers, 0)
                if m.ffn == "moe" else 0)
  inactive = 0
  if moe_layers:
    from moe.config import MoEConfig
    from moe.layer import expert_param_count
    inactive = (moe_layers * (m.moe.num_experts - m.moe.top_k)
                * expert_param_count(m.d_model, MoEConfig.from_config(m.moe)))
  return {"total": total, "active": total - inactive, "moe_layers": moe_layers}


def _human(n: int) -> str:
  for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= div:
      return f"{n / div:.2f}{unit}"
  return str(n)


def main(argv):
  del argv
  counts = parameter_counts(_CONFIG.value)
  print(f"{_CONFIG.value.name}: total {_human(counts['total'])} "
        f"({counts['total']:,}), active {_human(counts['active'])} "
        f"({counts['active']:,}) per token")
  print(json.dumps(counts))


if __name__ == "__main__":
  cli.run(main)
