"""``python -m phi3_server``: check the configuration and the model folder, then serve."""

from __future__ import annotations

import logging
import os
import sys
import threading

import uvicorn
from pydantic import ValidationError
from pydantic_settings import CliApp

from phi3_server.loading import ModelLocationError, locate_model
from phi3_server.settings import Settings

# In-flight requests get this long after SIGTERM before they are cut off.
GRACEFUL_SHUTDOWN_S = 5
# The generation thread gives up the GIL at every torch op; while the event loop runs Python
# (parsing requests, streaming chunks), taking it back waits up to the switch interval, 5 ms by
# default, per op. A shorter interval keeps a decode step from stretching behind the loop.
GIL_SWITCH_INTERVAL_S = 0.0005
# uvloop, uvicorn's compiled event loop, named so that a missing one fails the start instead of
# falling back to asyncio's. The worker thread wakes the loop once per decode step
# (runtime._EventRelay): under asyncio's loop that hand-off cost 0.07 ms per token event, 1 ms
# of a 10 ms step at 16 streams, on the core the model runs on; under uvloop 0.01 ms
# (figures in serving_image/README.md). HTTP stays h11: httptools, the other "standard" extra,
# measured no difference at 16 streams, and uvicorn's httptools protocol has no bound on request
# headers, where h11 refuses a request head over 16 KiB (h11's DEFAULT_MAX_INCOMPLETE_EVENT_SIZE,
# which uvicorn keeps while h11_max_incomplete_event_size is unset).
EVENT_LOOP = "uvloop"
HTTP_PROTOCOL = "h11"


def main(argv: list[str] | None = None) -> int:
    try:
        settings = CliApp.run(Settings, cli_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as error:
        for problem in error.errors():
            name = str(problem["loc"][0])
            flag = f"--{name.replace('_', '-')} (or PHI3_SERVER_{name.upper()})"
            print(f"error: {flag}: {problem['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        source = locate_model(
            settings.model_dir, settings.base_model, os.environ.get("AZUREML_MODEL_DIR")
        )
    except ModelLocationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from phi3_server.app import create_app  # torch and transformers: only once the set-up is valid

    load_failed = threading.Event()

    def stop_after_load_failure() -> None:
        load_failed.set()
        server.should_exit = True

    app = create_app(settings, source, on_fatal=stop_after_load_failure)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            loop=EVENT_LOOP,
            http=HTTP_PROTOCOL,
        )
    )
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    server.run()
    return 1 if load_failed.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
