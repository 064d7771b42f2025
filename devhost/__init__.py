"""A small local Functions host for ``function_app.py``: HTTP, blob and timer triggers.

Never deployed; ``python -m devhost --help`` lists its commands.
"""
