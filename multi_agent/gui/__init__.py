"""PyQt5 front end of the desktop assistant: it displays and emits signals; the logic lives in
:mod:`multi_agent.assistant` and :mod:`multi_agent.rag`."""
