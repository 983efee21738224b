"""Single ``POST /v1/offers`` requests waiting at the same moment, decided in one engine call.

A renderer printing a run of invoices sends many single requests at once. While the worker
decides one, the next ones arrive; deciding each alone would pay, per invoice, for a look-up in
the decision log, a call of each model and a log transaction with its fsync. Here a request
joins a waiting list on the event loop, and the list is decided one turn of the loop later,
once the other requests that were ready at the same moment have joined it: all of them in one
:meth:`serving.offers.OffersService.answer_many`, the function behind ``POST /v1/offers/batch``,
so each is decided, stored and replayed exactly as it would have been alone.

An idle server answers a lone request one turn of the loop later (a few microseconds); a busy
one decides what queued up behind the previous call together, which is what lets one worker
keep up with more requests than it could decide one at a time.
"""

from __future__ import annotations

import asyncio
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


class WaitingDecisions:
    """The requests of one event loop waiting to be decided; only for requests whose whole path
    answers without waiting (see :meth:`OffersService.answers_without_waiting`), since the
    decision runs on the loop."""

    def __init__(self, offers: OffersService, most_together: int = MOST_TOGETHER) -> None:
        self._offers = offers
        self._most = most_together
        self._waiting: list[_Waiting] = []
        self._scheduled = False
        self.calls = 0  # engine calls made, for the metrics and tests

    async def answer(self, request: DecisionRequest, arm: Arm, dry_run: bool) -> InvoiceOutcome:
        """The invoice's outcome, as ``OffersService.answer_many`` gives it; raises what that
        call raised (a database that cannot store the decisions) for every request of the call."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(request, arm, dry_run, loop.create_future())
        self._waiting.append(waiting)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._decide_waiting, loop)
        return await waiting.outcome

    def _decide_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        group, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
        if self._waiting:  # the rest after this call, with whatever joins them meanwhile
            loop.call_soon(self._decide_waiting, loop)
        else:
            self._scheduled = False
        # A request whose client went away is not decided: nobody would see the answer.
        group = [waiting for waiting in group if not waiting.outcome.done()]
        if not group:
            return
        self.calls += 1
        try:
            outcomes = self._offers.answer_many(
                [waiting.request for waiting in group],
                [waiting.arm for waiting in group],
                dry_runs=[waiting.dry_run for waiting in group],
            )
        except Exception as error:  # every request of the call answers it (503 for a database)
            for waiting in group:
                if not waiting.outcome.done():
                    waiting.outcome.set_exception(error)
            return
        for waiting, outcome in zip(group, outcomes, strict=True):
            if not waiting.outcome.done():
                waiting.outcome.set_result(outcome)
