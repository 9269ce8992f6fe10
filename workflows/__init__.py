"""The shipped workflows, installed as package data so ``guidegraph serve`` finds them wherever it starts.

This package holds no code the server runs: ``server.templates`` reads the ``*.ui.json`` files (and
their ``*.jpg`` thumbnails) beside this file.
"""
