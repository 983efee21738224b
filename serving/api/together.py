"""Single ``POST /v1/offers`` requests waiting at the same moment, decided in one engine call.

A renderer printing a run of invoices sends many single requests at once. While the worker
decides one, the next ones arrive; deciding each alone would pay, per invoice, for a look-up in
the decision log, a call of each model and a log transaction with its fsync. Here a request
joins a waiting list on the event loop, and the list is decided one turn of the loop later,
once the other requests that were ready at the same moment have joined it: all of them in one
:meth:`serving.offers.OffersService.answer_many`, the function behind ``POST /v1/offers/batch``,
so each is decided, stored and replayed exactly as it would have been alone. A customer's second
invoice waits for the next call (alone, it would see the first one's decision in the log), and a
call that fails is made again request by request, so that one request's failure is its own.

An idle server answers a lone request one turn of the loop later (a few microseconds); a busy
one decides what queued up behind the previous call together, which is what lets one worker
keep up with more requests than it could decide one at a time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from serving.decision.inputs import DecisionRequest
from serving.offers import Arm, InvoiceOutcome, OffersService

# The most single requests decided in one call: a larger group would make the first of them
# wait for the whole group's decisions.
MOST_TOGETHER = 64


@dataclass(frozen=True)
class _Waiting:
    request: DecisionRequest
    arm: Arm
    dry_run: bool
    outcome: asyncio.Future[InvoiceOutcome]
    joined: float  # time.perf_counter() when the request joined the list


class WaitingDecisions:
    """The requests of one event loop waiting to be decided; only for requests whose whole path
    answers without waiting (see :meth:`OffersService.answers_without_waiting`), since the
    decision runs on the loop."""

    def __init__(self, offers: OffersService, most_together: int = MOST_TOGETHER) -> None:
        self._offers = offers
        self._most = most_together
        self._waiting: list[_Waiting] = []
        self._scheduled = False
        self.calls = 0  # calls of answer_many made, as tests read them

    async def answer(self, request: DecisionRequest, arm: Arm, dry_run: bool) -> InvoiceOutcome:
        """The invoice's outcome, as ``OffersService.answer_many`` gives it; raises what deciding
        this request alone raised (a database that cannot store its decision)."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(request, arm, dry_run, loop.create_future(), time.perf_counter())
        self._waiting.append(waiting)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._decide_waiting, loop)
        return await waiting.outcome

    def _decide_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        group = self._take_group()
        if self._waiting:  # the rest after this call, with whatever joins them meanwhile
            loop.call_soon(self._decide_waiting, loop)
        else:
            self._scheduled = False
        # A request whose task was cancelled (a server shutting down) is not decided.
        group = [waiting for waiting in group if not waiting.outcome.done()]
        # How long each waited for its call: the steps of its decision do not count the wait.
        started = time.perf_counter()
        metrics = self._offers.metrics
        for waiting in group:
            if metrics is not None:
                metrics.observe_steps({"wait": started - waiting.joined})
        try:
            if len(group) > 1 and self._decided(group):
                return
            for waiting in group:  # alone: what one request raises is that request's answer
                self._decided([waiting])
        finally:
            for waiting in group:  # never leave a request waiting for good
                if not waiting.outcome.done():
                    waiting.outcome.set_exception(RuntimeError("the decision was not made"))

    def _decided(self, group: list[_Waiting]) -> bool:
        """Decide ``group`` in one call and settle each request with its outcome; False, with
        nothing settled, when the call raised for a group of several (they are then decided
        alone), and for one request its error (503 for the log, as the route answers it)."""
        self.calls += 1
        try:
            outcomes = self._offers.answer_many(
                [waiting.request for waiting in group],
                [waiting.arm for waiting in group],
                dry_runs=[waiting.dry_run for waiting in group],
            )
        except Exception as error:
            if len(group) > 1:
                return False
            (waiting,) = group
            waiting.outcome.set_exception(error)
            return True
        for waiting, outcome in zip(group, outcomes, strict=True):
            if not waiting.outcome.done():
                waiting.outcome.set_result(outcome)
        return True

    def _take_group(self) -> list[_Waiting]:
        """The next call's requests, in arrival order: at most ``most_together``, and one per
        customer. A customer's second invoice waits for the next call, because deciding alone it
        would see the first one's decision in the log (its decline cap counts the customer's
        invoices)."""
        group: list[_Waiting] = []
        later: list[_Waiting] = []
        customers: set[str] = set()
        for waiting in self._waiting:
            customer = waiting.request.customer_id
            if len(group) < self._most and customer not in customers:
                group.append(waiting)
                customers.add(customer)
            else:
                later.append(waiting)
        self._waiting = later
        return group
