"""The waiters' stop signal, which Python runs in whatever context the main thread is in."""

import asyncio
import signal

from api.waiting import Waiters
from nmdc_runtime import logs


def test_a_stop_signal_during_a_request_is_handled_outside_the_request():
    """The shutdown's log line carried the id of the request the signal happened to interrupt."""
    seen = []

    async def main():
        waiters = Waiters(None, max_waiters=1, max_per_site=1)
        waiters._loop = asyncio.get_running_loop()
        waiters.begin_shutdown = lambda: seen.append(logs.request_id.get())
        previous = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
        try:
            waiters._chain_signal(signal.SIGUSR1)
            token = logs.request_id.set("req-interrupted")
            signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
            logs.request_id.reset(token)
            await asyncio.sleep(0)
        finally:
            signal.signal(signal.SIGUSR1, previous)

    asyncio.run(main())
    assert seen == [None]
