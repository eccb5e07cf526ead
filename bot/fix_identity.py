"""What decides a fix is part of what makes two alerts "the same".

A title fingerprint drops quoted values so that `User 'alice' not found` and `User 'bob' not
found` group; but `Cannot find module 'evil-helper'` and `Cannot find module 'express'` must
not, or the second would inherit the first's proposal (install evil-helper) and its recurrence
watch. So when an allow-listed pattern recognises an alert, the text it matched (the package,
module, host, port or path its fix would act on) is added to the fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict

from bot.models import Alert, AlertKind
from patterns import PatternSet

CACHE_SIZE = 4096


class FixIdentity:
    """`identity(alert)` is the alert with its fingerprint refined by the pattern it matches.

    Storms repeat the same text thousands of times: results are cached by fingerprint and text.
    """

    def __init__(self, patterns: PatternSet) -> None:
        self.patterns = patterns
        self._cache: OrderedDict[tuple[str, int], str] = OrderedDict()

    def __call__(self, alert: Alert) -> Alert:
        if alert.kind is not AlertKind.ERROR:
            return alert  # an uptime monitor's fingerprint is its monitor, nothing else
        key = (alert.fingerprint, hash((alert.title, alert.message, alert.stacktrace, alert.server)))
        suffix = self._cache.get(key)
        if suffix is None:
            suffix = self._suffix(alert)
            self._cache[key] = suffix
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return dataclasses.replace(alert, fingerprint=alert.fingerprint + suffix) if suffix else alert

    def _suffix(self, alert: Alert) -> str:
        # Any server: the identity is about what the fix acts on, not whether it may run here.
        found = self.patterns.evaluate(alert, hosts=())
        if found is None:
            return ""
        evidence = " ".join(found.evidence.split())[:500]
        digest = hashlib.sha256(f"{found.pattern.id}\x1f{evidence}".encode()).hexdigest()[:12]
        return f"|fix:{digest}"
