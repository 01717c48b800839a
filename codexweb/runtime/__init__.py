"""The ChatKit runtime behind `POST /chatkit` (CONTRACT §4b): codexweb's own ChatKit server.

access.py (ChatKit token -> caller), store.py (the SDK's Store on our database),
agents.py (CODEX_AGENTS -> an Agents SDK agent or the offline demo), server.py (the SDK's
ChatKitServer), views.py (the HTTP endpoint), transcript.py (the transcript rule).
"""
