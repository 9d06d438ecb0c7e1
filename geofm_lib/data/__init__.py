"""Data: the scene sources (simulator and real readers), captions, and the shard format and
build that every later stage reads.
"""
