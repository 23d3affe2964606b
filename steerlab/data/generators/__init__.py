"""Seeded generators of the offline datasets that are not hand-written: arithmetic, general prompts, monitor chats
(the medical and financial advice sets are written for the project, `steerlab.data.written`)."""
