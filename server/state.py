"""The application's typed state: one ``web.AppKey`` per long-lived object."""

from __future__ import annotations

import asyncio

from aiohttp import web

from graph_runtime.registry import Registry
from server.config import ServerConfig
from server.hub import Hub
from server.intake import Intake
from server.logs import LogBuffer
from server.store import PromptStore
from server.templates import Templates
from server.worker import Workers

CONFIG = web.AppKey("config", ServerConfig)
REGISTRY = web.AppKey("registry", Registry)
STORE = web.AppKey("store", PromptStore)
INTAKE = web.AppKey("intake", Intake)
HUB = web.AppKey("hub", Hub)
WORKER: web.AppKey[Workers] = web.AppKey("worker")
TEMPLATES = web.AppKey("templates", Templates)
STATIC_ROOT = web.AppKey("static_root", object)
EXECUTOR_FACTORY = web.AppKey("executor_factory", object)
LOGS = web.AppKey("logs", LogBuffer)
SETTINGS_LOCK = web.AppKey("settings_lock", asyncio.Lock)
