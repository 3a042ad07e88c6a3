"""The Faust worker: validate raw terminal messages, re-key by event_id, count exactly once."""
