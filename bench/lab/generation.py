"""Generation at a fixed length, for timing: every caption runs exactly ``max_new_tokens`` steps, so
throughput compares equal work whatever the (random-weight) model would stop at. Benchmark only:
users get ``vlft.infer.VLGenerator`` as it is."""

from __future__ import annotations

from vlft.infer import VLGenerator


class FixedLengthGenerator(VLGenerator):
    """``VLGenerator`` whose every call generates ``max_new_tokens`` tokens (``min_new_tokens`` set too)."""

    def _generation_kwargs(self, max_new_tokens: int, temperature: float, top_p: float) -> dict:
        kwargs = super()._generation_kwargs(max_new_tokens, temperature, top_p)
        kwargs["generation_config"].min_new_tokens = int(max_new_tokens)
        return kwargs
