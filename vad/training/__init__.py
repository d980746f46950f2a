"""Training: `vad train` on Ray Train (`job`), its clip and MIL loops, and the local fit of the benchmarks."""
