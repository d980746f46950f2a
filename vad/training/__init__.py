"""Learning models of normal: `vad train` (`job`) hands each model to the learner of its kind (`LearningType`:
`clips` by gradient on Ray Train, `fitting` in Ray Data passes, `mil` weakly supervised), each returning one
`result.Trained`; `local` runs the same learners in one process (a fleet camera's task, benchmarks, tests)."""
