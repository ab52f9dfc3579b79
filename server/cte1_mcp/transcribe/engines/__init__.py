"""Speech-recognition engines, one module each, with the same contract:

- ``NAME``: the engine's name in a transcript's ``engine.name``;
- ``matches(model_dir) -> bool``: whether the folder's file names are this engine's kind of model
  (cheap, imports nothing heavy: it chooses the engine);
- ``load(model_dir, *, device, compute_type, threads) -> Transcriber``: the loaded model, or
  :class:`~cte1_mcp.transcribe.base.ModelUnusable` saying why not (a file missing, a file that does
  not load, the engine's optional package not installed).
"""
