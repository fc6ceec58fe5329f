"""The app builder: one FastAPI app with the routers of each API, in the manner of vLLM's
``build_app`` (vllm-project/vllm vllm/entrypoints/openai/api_server.py: routers registered on
one app, shared state on ``app.state``).

The model loads on a background thread after the server starts listening, so liveness answers at
once and ``/ready`` turns 200 only after the load and one warm-up generation.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from phi3_server.engine import BatchingEngine
from phi3_server.errors import install_error_handlers
from phi3_server.loading import ModelSource, end_token_ids, load, served_context
from phi3_server.middleware import BodySizeLimit, MetricsMiddleware
from phi3_server.routes import azureml, openai, probes
from phi3_server.runtime import ModelRuntime, ServerState
from phi3_server.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings, source: ModelSource, on_fatal: Callable[[], None]) -> FastAPI:
    """The app; it starts loading ``source`` when uvicorn starts it, and calls ``on_fatal``
    if the model cannot be loaded."""
    state = ServerState(settings)

    def load_and_warm_up() -> None:
        try:
            model, tokenizer = load(source, settings.device, settings.dtype, settings.attention)
            engine = BatchingEngine(
                model,
                tokenizer,
                end_token_ids(model, tokenizer),
                settings.max_batch_size,
                on_step=state.metrics.batch_size.observe,
                prefill_chunk_tokens=settings.prefill_chunk_tokens,
            )
            engine.start()
            state.metrics.watch_engine(lambda: engine.waiting_count, lambda: engine.running_count)
            context = served_context(model.config)
            if context < model.config.max_position_embeddings:
                logger.warning(
                    "serving up to %d tokens of the model's %d: longrope switches its rotary "
                    "factors past that, which a shared batch cache cannot follow",
                    context,
                    model.config.max_position_embeddings,
                )
            loaded = ModelRuntime(engine, tokenizer, context)
            loaded.warm_up(settings.request_timeout)
            # A full collection over the loaded heap (390,000 objects with the tiny model) took
            # 240 ms, in which neither the event loop nor the engine runs; frozen, the collector
            # skips it while serving (vLLM's freeze_gc_heap after warm-up does the same:
            # vllm/utils/gc_utils.py). Garbage is collected first: frozen objects are kept.
            gc.collect()
            gc.freeze()
            state.runtime = loaded
            logger.info("ready: serving %s as %r", source.model_dir, settings.served_model_name)
        except Exception:
            logger.exception("cannot serve %s", source.model_dir)
            on_fatal()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load_and_warm_up, name="phi3-loader", daemon=True).start()
        yield
        if state.runtime is not None:
            state.runtime.engine.stop()

    app = FastAPI(title="Phi-3 server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.phi3 = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    for router in (probes.router, openai.router, azureml.router):
        app.include_router(router)
    return app
