"""Quix Streams peer of Sluice's balance aggregation (`keyed-sum`), for side-by-side benchmarks.

Input: records keyed by account (UTF-8 text, e.g. `acct-17`) whose value is a signed integer in
UTF-8 text (e.g. `-23`). For each record the running total of its key is read from Quix's state
(RocksDB, backed by a changelog topic), the amount added, the total written back and
`key -> total` (UTF-8 text) produced to the output topic. The `event_id` header is not read
(no dedupe here), but it is forwarded with the output like Sluice forwards it.

Started by `./run` (see README.md). Prints `{"event":"running","at_ms":...}` on stdout once the
partitions are assigned and any state recovery is done, and `{"event":"stopped","at_ms":...}`
after a clean stop (SIGTERM or SIGINT), then exits 0.
"""

import signal

# A SIGTERM/SIGINT seen at any time, also while quixstreams is being imported (a few seconds on a
# busy machine) and before Application.run() installs its handlers: start-up then ends cleanly.
STOP = {"requested": False}


def _on_early_signal(*_):
    STOP["requested"] = True


for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, _on_early_signal)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

# authlib, which quixstreams imports for Quix Cloud, warns on import that it falls back to httpx
# (noise on stderr). Its module installs an "always" filter for its warnings: ours goes in front.
try:
    import authlib.deprecate  # noqa: F401
except ImportError:
    pass
warnings.filterwarnings("ignore", message="The httpx module is deprecated")

from quixstreams import Application, State  # noqa: E402

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def emit(event: str) -> None:
    """One JSON line on stdout, flushed at once (the harness reads it through a pipe)."""
    sys.stdout.write(json.dumps({"event": event, "at_ms": time.time_ns() // 1_000_000}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def keyed_sum(value: str, state: State) -> str:
    """The work of Sluice's `keyed-sum` (streams/src/builtin.rs) without the dedupe store."""
    total = state.get("total", 0) + int(value.strip())
    if not I64_MIN <= total <= I64_MAX:  # Sluice keeps an i64 and refuses an overflow
        raise OverflowError(f"total would overflow i64: {total}")
    state.set("total", total)
    return str(total)


class PeerApplication(Application):
    """`Application` that says when it is ready to process.

    quixstreams 3.28.1 has no public assignment callback: `Application.run()` subscribes with its
    own `Application._on_assign` (assigns the partitions, pauses the changelog partitions, opens
    the state stores and registers the ones whose changelog must be replayed). Once it returns,
    the main loop (`Application._run_dataframe`) either calls `StateStoreManager.do_recovery()`
    while `recovery_required` is true, or polls and processes input. So "ready" is: after the
    first non-empty `_on_assign`, and after `do_recovery()` when a recovery was needed. Neither
    hook is on the per-record path.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("_on_assign", "_setup_signal_handlers", "_state_manager"):
            if not hasattr(self, name):
                raise RuntimeError(f"quixstreams changed: Application.{name} is gone; check the pinned version")
        self.announced = False
        state_manager = self._state_manager
        do_recovery = state_manager.do_recovery

        def do_recovery_then_announce():
            do_recovery()
            self._announce_if_ready()

        # Called by the main loop only while a recovery is pending (never per record).
        state_manager.do_recovery = do_recovery_then_announce

    def _announce_if_ready(self):
        if not self.announced and not self._state_manager.recovery_required:
            self.announced = True
            emit("running")

    def _on_assign(self, consumer, topic_partitions):
        super()._on_assign(consumer, topic_partitions)
        if not topic_partitions:
            return
        if STOP["requested"]:
            # A SIGTERM that came between run()'s signal set-up and the loop's start was undone
            # by RunTracker.set_as_running(): stop again now that the loop runs.
            self.stop()
            return
        self._announce_if_ready()

    def _setup_signal_handlers(self):
        # Quix's handlers call stop(); remember the request as well (see _on_assign).
        def on_signal(*_):
            STOP["requested"] = True
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="benches/peers/quix/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True, help="HOST:PORT")
    parser.add_argument("--input", required=True, help="input topic (amounts)")
    parser.add_argument("--output", required=True, help="output topic (totals)")
    parser.add_argument("--application-id", required=True, help="consumer group (Quix's consumer_group)")
    parser.add_argument("--guarantee", required=True, choices=["at_least_once", "exactly_once"])
    parser.add_argument("--state-dir", required=True, help="Quix's state_dir (RocksDB stores)")
    parser.add_argument("--commit-interval-ms", type=int, default=100, help="commit interval (default 100, Sluice's)")
    args = parser.parse_args(argv)
    if args.commit_interval_ms <= 0:
        parser.error("--commit-interval-ms must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if STOP["requested"]:
        emit("stopped")
        return 0

    app = PeerApplication(
        broker_address=args.bootstrap_servers,
        consumer_group=args.application_id,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval_ms / 1000.0,
        state_dir=args.state_dir,
        processing_guarantee=args.guarantee.replace("_", "-"),
        loglevel="WARNING",
        auto_create_topics=True,
        use_changelog_topics=True,
    )
    amounts = app.topic(args.input, key_deserializer="str", value_deserializer="str")
    totals = app.topic(args.output, key_serializer="str", value_serializer="str")
    sdf = app.dataframe(amounts)
    sdf = sdf.apply(keyed_sum, stateful=True)
    sdf.to_topic(totals)

    if not STOP["requested"]:
        app.run()
    emit("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
