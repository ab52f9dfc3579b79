"""Speech-recognition engines behind the ``Transcriber`` seam, one module each.

Every engine module has ``NAME``, ``matches(model_dir)`` (by file names only, so choosing an engine
never loads a model) and ``load(model_dir, *, device, compute_type, threads)``, which returns a
``Transcriber`` or raises ``ModelUnusable`` with a reason a user can act on.
"""
