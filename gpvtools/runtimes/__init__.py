"""Model runtimes shared by scoring, parsing and elicitation: llama.cpp, chat models (OpenAI-compatible servers
and local GGUF), the built-in models' files, and the disk cache of replies."""
