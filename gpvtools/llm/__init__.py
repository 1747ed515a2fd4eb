"""Talking to chat LLMs: OpenAI-compatible servers and local GGUF models, with retries and a disk cache.

gpv-parse uses this to turn chunks into perceptions; gpv-elicit will use it to ask models questions.
"""
