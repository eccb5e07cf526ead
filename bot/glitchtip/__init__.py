"""GlitchTip's API: richer cards, live counts, and resolves that GlitchTip hears (issue 10).

The webhook GlitchTip sends is thin (no culprit, no stack, no counts) and comes once per issue
while it stays unresolved, so this package reads the rest from GlitchTip's API and writes
resolves back. Everything is optional: with no `GLITCHTIP_URL`/`GLITCHTIP_TOKEN` none of it runs.

    api.py       GlitchTipClient: httpx, Bearer token, timeouts, typed answers, errors by kind
    details.py   what a card needs, built from the answers (redacted, cut): culprit, frames, request…
    card.py      the card's extra lines (escaped), in the slots bot/card_render.py leaves for them
    service.py   GlitchTipService: the pipeline's hooks (prefetch within a budget, link, comeback),
                 the durable job queue's worker (enrich, refresh, resolve) and the refresh schedule
    check.py     `remediator glitchtip check`: reach, auth, read scope, resolve scope

The rows live in storage/glitchtip.py (a link per incident, and the job queue).
"""
