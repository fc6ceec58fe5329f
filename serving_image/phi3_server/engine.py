"""Continuous batching: concurrent requests share every forward pass of the model.

One worker thread owns the model. Each step it advances the prefill of newly admitted prompts
by one chunk (``kv_batch.ChunkedPrefill``), then decodes one token for every running sequence in
a single forward pass over the shared cache (``kv_batch.BatchedCache``). Finished, cancelled or
expired sequences leave the batch between steps, so a long answer never holds up a short one,
and a long prompt delays the running sequences by one chunk per step, not its whole prefill.

Isolation: a request's parameters, or non-finite scores in its row, fail that request only
(``Sequence``/``Sampler`` raise, the step catches per row); a fault of a shared forward pass
fails the requests in it; and should the worker ever die, ``alive`` turns false, which the
probes report so that Azure replaces the instance.

transformers' own continuous batching (``model.init_continuous_batching``) was evaluated first:
it samples every request with one shared ``do_sample`` flag and the global RNG, so per-request
greedy/sampled choice and ``seed`` cannot be honoured; this module keeps those per sequence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from phi3_server.kv_batch import BatchedCache, ChunkedPrefill
from phi3_server.sampling import SamplingError, choose_tokens
from phi3_server.sequence import GenerationRequest, Sequence

logger = logging.getLogger(__name__)

# Padded prompt tokens one prefill chunk may hold: at most this much prefill work runs
# between two decode steps of the running batch.
DEFAULT_PREFILL_CHUNK_TOKENS = 512
DEADLINE_EXCEEDED = "the request exceeded its deadline"
SHUTTING_DOWN = "the server is shutting down"
GENERATION_FAILED = "generation failed on the server"


class _Prefill:
    """Admitted sequences and the prefill that will join them to the batch."""

    def __init__(self, sequences: list[Sequence], chunks: ChunkedPrefill) -> None:
        self.sequences = sequences
        self.chunks = chunks


class BatchingEngine:
    """Runs generation for all requests on one worker thread, ``max_batch_size`` at a time."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_token_ids: frozenset[int],
        max_batch_size: int,
        on_step: Callable[[int], None] = lambda batch_size: None,
        prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._eos_ids = eos_token_ids
        self._max_batch_size = max_batch_size
        self._on_step = on_step
        self._prefill_chunk_tokens = prefill_chunk_tokens
        self._vocab_size = int(model.config.vocab_size)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Sampling noise of the requests without a seed, from an unpredictable seed.
        self._unseeded = torch.Generator(model.device)
        self._unseeded.seed()
        # Guards _waiting and _closed, so that no request is queued after the worker drained.
        self._waiting_changed = threading.Condition()
        self._waiting: deque[GenerationRequest] = deque()
        self._closed = False
        self._rows: list[Sequence] = []
        self._batch = BatchedCache(model)
        self._prefill: _Prefill | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phi3-generation", daemon=True)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    @property
    def running_count(self) -> int:
        return len(self._rows)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def alive(self) -> bool:
        """The worker is running and taking requests."""
        return self._thread.is_alive() and not self._closed

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current step; every unfinished request gets a ``Failed`` event."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        # The worker closes the queue as it exits; this covers a worker never started.
        self._close_waiting()

    def submit(self, request: GenerationRequest) -> None:
        with self._waiting_changed:
            if not self._closed:
                self._waiting.append(request)
                self._waiting_changed.notify()
                return
        request.fail(SHUTTING_DOWN)

    def _run(self) -> None:
        message = SHUTTING_DOWN
        try:
            with torch.inference_mode():
                while not self._stopping.is_set():
                    self._step()
        except BaseException:
            # Nothing in a step should get here; if something does, say so loudly and end
            # every request, and `alive` turns false for the probes.
            logger.critical("the generation worker died", exc_info=True)
            message = GENERATION_FAILED
            raise
        finally:
            # Also when the worker itself crashed: nobody would ever take these requests.
            self._close_waiting()
            self._fail_admitted(message)

    def _step(self) -> None:
        self._expire_waiting()
        if self._prefill is None:
            self._prefill = self._admit(self._take_waiting())
        if self._prefill is not None:
            self._advance_prefill(self._prefill)
        if self._rows:
            try:
                self._decode()
            except Exception:  # a fault of the shared batch must fail its requests, not hang them
                logger.exception("decode step failed")
                self._fail_running(GENERATION_FAILED)

    def _admit(self, requests: list[GenerationRequest]) -> _Prefill | None:
        """Per-sequence state for each request (a parameter it cannot use fails it alone),
        and the prefill of their prompts."""
        sequences = []
        for request in requests:
            try:
                sequences.append(
                    Sequence(request, self._tokenizer, self._vocab_size, self._model.device)
                )
            except SamplingError as error:
                request.fail(str(error), param=error.param)
            except Exception:
                logger.exception("cannot start a request")
                request.fail(GENERATION_FAILED)
        if not sequences:
            return None
        prompts = [sequence.request.prompt_ids for sequence in sequences]
        try:
            chunks = ChunkedPrefill(self._model, prompts, self._pad_id, self._prefill_chunk_tokens)
        except Exception:
            logger.exception("cannot prepare the prefill of %d requests", len(sequences))
            for sequence in sequences:
                sequence.fail(GENERATION_FAILED)
            return None
        return _Prefill(sequences, chunks)

    def _advance_prefill(self, prefill: _Prefill) -> None:
        """One chunk of the prefill; after the last, the new rows join the batch. A prompt that
        cannot be processed (out of memory on a long one) fails only the new requests."""
        now = time.monotonic()
        if all(s.request.cancelled.is_set() or now > s.request.deadline for s in prefill.sequences):
            self._prefill = None
            for sequence in prefill.sequences:
                if not sequence.request.cancelled.is_set():
                    sequence.fail(DEADLINE_EXCEEDED, timed_out=True)
            return
        try:
            logits = prefill.chunks.step()
            if logits is None:
                return
            self._batch.admit(prefill.chunks)
        except Exception:
            logger.exception("prefill of %d new requests failed", len(prefill.sequences))
            self._prefill = None
            for sequence in prefill.sequences:
                sequence.fail(f"{GENERATION_FAILED}: the prompt could not be processed")
            return
        self._prefill = None
        self._rows.extend(prefill.sequences)
        self._advance(prefill.sequences, logits)

    def _decode(self) -> None:
        self._on_step(len(self._rows))
        logits = self._batch.decode(
            [s.last_token for s in self._rows], [s.last_position for s in self._rows]
        )
        self._advance(self._rows, logits)

    def _advance(self, sequences: list[Sequence], logits: torch.Tensor) -> None:
        """Each sequence's next token from its row; a row's fault fails that sequence only."""
        try:
            tokens = choose_tokens(
                [sequence.sampler for sequence in sequences], logits, self._unseeded
            )
        except Exception:  # a batched op: it fails the sequences it served, not the worker
            logger.exception("sampling failed for %d sequences", len(sequences))
            for sequence in sequences:
                sequence.fail(GENERATION_FAILED)
            self._drop_finished()
            return
        now = time.monotonic()
        for row, sequence in enumerate(sequences):
            request = sequence.request
            try:
                if request.cancelled.is_set():
                    sequence.done = True
                elif now > request.deadline and not sequence.generated:
                    sequence.fail(DEADLINE_EXCEEDED, timed_out=True)
                elif now > request.deadline:
                    # A server-side cap on generation, like max_tokens: the answer so far.
                    sequence.finish("length")
                elif (token := tokens[row]) is None:
                    raise SamplingError("the model's scores for this request are not finite")
                else:
                    sequence.accept(token, self._eos_ids)
            except SamplingError as error:
                logger.warning("request failed in sampling: %s", error)
                sequence.fail(f"{GENERATION_FAILED}: {error}", param=error.param)
            except Exception:
                logger.exception("request failed in sampling")
                sequence.fail(GENERATION_FAILED)
        self._drop_finished()

    def _close_waiting(self) -> None:
        with self._waiting_changed:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
        for request in left:
            request.fail(SHUTTING_DOWN)

    def _expire_waiting(self) -> None:
        """Drop cancelled and fail expired queued requests, even while the batch is full: a
        queued request must learn of its timeout at its deadline, not when a slot frees."""
        now = time.monotonic()
        with self._waiting_changed:
            expired = [r for r in self._waiting if not r.cancelled.is_set() and now > r.deadline]
            live = [r for r in self._waiting if not r.cancelled.is_set() and now <= r.deadline]
            self._waiting = deque(live)
        for request in expired:
            request.fail("the request timed out while queued", timed_out=True)

    def _take_waiting(self) -> list[GenerationRequest]:
        with self._waiting_changed:
            if not self._rows and not self._waiting:
                # Block briefly only when idle, so a busy batch never waits for newcomers.
                self._waiting_changed.wait(timeout=0.1)
            room = self._max_batch_size - len(self._rows)
            return [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]

    def _drop_finished(self) -> None:
        keep = [row for row, sequence in enumerate(self._rows) if not sequence.done]
        if len(keep) < len(self._rows):
            self._rows = [self._rows[row] for row in keep]
            self._batch.keep(keep)

    def _fail_running(self, message: str) -> None:
        for sequence in self._rows:
            if not sequence.done:
                sequence.fail(message)
        self._rows = []
        self._batch.clear()

    def _fail_admitted(self, message: str) -> None:
        """End every request the worker holds (prefilling or running)."""
        prefill, self._prefill = self._prefill, None
        for sequence in prefill.sequences if prefill is not None else []:
            if not sequence.done:
                sequence.fail(message)
        self._fail_running(message)
