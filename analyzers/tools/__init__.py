"""Tools the procedural agent may call: the tool protocol, the conversation-reading tools, HTTP
tools (with their templates and effects)."""
