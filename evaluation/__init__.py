"""`lapo eval`: Pass@1 and reasoning tokens of a checkpoint (in-process vLLM) or of any
OpenAI-compatible endpoint, per difficulty level, with declared-vs-actual budget adherence.

``data`` (the synthetic held-out split, MATH500, AIME) -> ``backends`` (samples, scored by
`lapo.checker`, counted by `lapo.protocol`) -> ``report`` (REPORT.json, .md, .png);
``evaluate`` drives them. Depends on `lapo` only, never on `training` or `service`: the
training pipeline calls it to evaluate its checkpoints, and an endpoint is reached over HTTP.
"""
