"""Ansible callback for tests/fleet: one JSON line per task start and per host result.

Enabled by the tests through ANSIBLE_CALLBACKS_ENABLED=fleet_recorder and
FLEET_RECORDER_FILE=<path>; the default stdout callback keeps printing as usual.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: fleet_recorder
type: aggregate
short_description: record task starts and results as JSON lines (tests only)
description: Writes one JSON object per task start and per host result to FLEET_RECORDER_FILE.
requirements: [FLEET_RECORDER_FILE in the environment]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleet_recorder"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._path = os.environ.get("FLEET_RECORDER_FILE", "")
        self._play = ""
        self._start = 0

    def _write(self, event: dict[str, Any]) -> None:
        if self._path:
            event["time"] = round(time.monotonic(), 3)
            with open(self._path, "a", encoding="utf-8") as out:
                out.write(json.dumps(event, default=str) + "\n")

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._play = play.get_name()
        self._write({"event": "play", "play": self._play})

    def _task_start(self, task: Any, handler: bool) -> None:
        self._start += 1
        self._write({"event": "start", "play": self._play, "task": task.get_name(),
                     "handler": handler, "start": self._start})

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._task_start(task, False)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._task_start(task, True)

    def _result(self, result: Any, status: str) -> None:
        res = result._result
        self._write({
            "event": "result", "play": self._play, "task": result._task.get_name(),
            "host": result._host.get_name(), "status": status, "start": self._start,
            "changed": bool(res.get("changed")), "msg": str(res.get("msg", "")),
            "skip_reason": res.get("skip_reason", ""),
            "false_condition": str(res.get("false_condition", "")),
        })

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result(result, "unreachable")
