"""Task adapters: turn a model's outputs into the scalar targets the engine explains.

Installed as ``taskcam.adapters``; each adapter imports its task's library only when used.
"""
