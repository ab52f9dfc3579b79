"""Transcripts: what each party said, with times, computed on this machine (nothing leaves it).

``base`` is the seam every engine implements; ``pieces`` turns the analyser's talk into the stretches
an engine hears; ``transcript`` is the result's shape (CT-e1's ``sentenceList``, with offsets).
"""
