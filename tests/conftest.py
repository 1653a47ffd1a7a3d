"""Shared pytest set-up.

Tests run on the CPU backend with float32 matmuls at full precision, so the
bit-exact determinism tests compare like with like on every machine.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Let CPU tests that need several devices (sharding, collectives) have them.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
