-- Issue 11: an investigation's full report, besides the short chat reply (report_html).

-- The whole report as Markdown (redacted; what the chat's document and a GitHub issue body show),
-- and the structured report as JSON (bot/investigate/model.py: root cause, evidence, suggested fix,
-- tests to add, confidence, what could not be determined, and whether Claude or no AI wrote it).
ALTER TABLE investigations ADD COLUMN report_markdown TEXT;
ALTER TABLE investigations ADD COLUMN report_json TEXT;
