"""Stage 1: sample this machine. One module per metric family; ``sampler`` assembles the event.

Every reader returns its part of the schema-v1 event, or ``None`` / ``[]`` when the sensor is
absent or fails: a missing sensor is null plus a debug log, never an exception.
"""
