"""Lab code: experiments measured in bench/RESULTS.md that the shipped training path does not use
(packing several samples per row with precomputed M-RoPE positions; fixed-length generation for timing). Kept runnable and tested, so a
future experiment can pick it up; nothing under vlft/ imports it."""
