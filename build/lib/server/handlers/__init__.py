"""Thin request handlers: parse, call, serialise. One module per area of the API."""
