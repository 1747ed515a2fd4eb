"""The openai backend: any OpenAI-compatible completions endpoint that returns top logprobs.

This is the scale-out path (vLLM with prefix caching, llama.cpp's server). Each pair is one
completion of one token with the top-k log-probabilities; a label whose first token is not among
them is asked for directly, by echoing the prompt with the label and reading that token's
log-probability, so a probability is never guessed. Which token string starts each label is
learnt the same way once at start-up, since the server's tokenizer is not at hand here.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import BadRecord, GpvError, MissingDependency
from ..llm.chat import message_of as _message
from . import LABELS, LabelScorer, prompt, renormalise


class OpenAIScorer(LabelScorer):
    backend = "openai"

    def __init__(self, base_url, api_key=None, model=None, top_logprobs=20, concurrency=4, timeout=60.0,
                 max_retries=5):
        try:
            import openai
        except ImportError:
            raise MissingDependency("backend 'openai'", "openai", "server") from None
        if not base_url:
            raise GpvError("backend 'openai' needs a server: pass --base-url or set OPENAI_BASE_URL")
        self.openai = openai
        self.base_url = base_url
        # A local server needs no key; the client insists on one, so give it a placeholder.
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout,
                                    max_retries=max_retries)
        self.max_retries = max_retries
        self.top_k = top_logprobs
        self.concurrency = concurrency
        self.model = model or self._only_model()
        self.name = self.model
        self.label_tokens = {task: [self._first_token(prompt(task, "x", "y"), label) for label in LABELS[task]]
                             for task in LABELS}

    def _call(self, **kwargs):
        openai = self.openai
        try:
            return self.client.completions.create(model=self.model, temperature=0, **kwargs)
        except openai.APIConnectionError:
            raise GpvError(f"cannot reach the server at {self.base_url} (after {self.max_retries} retries)") from None
        except openai.AuthenticationError:
            raise GpvError(f"the server at {self.base_url} refused the API key; set OPENAI_API_KEY") from None
        except openai.BadRequestError as e:
            raise BadRecord(f"the server rejected the request: {_message(e)}") from None
        except openai.APIStatusError as e:
            raise GpvError(f"the server at {self.base_url} answered {e.status_code}: {_message(e)}") from None

    def _only_model(self):
        from ..llm.chat import only_model

        return only_model(self.client, self.base_url, self.openai, lambda e: GpvError(
            f"cannot reach the server at {self.base_url} (after {self.max_retries} retries)"))

    def _echo(self, text, start):
        """(token strings, logprobs) of TEXT from position START (a character offset) on."""
        r = self._call(prompt=text, max_tokens=1, echo=True, logprobs=1)
        lp = r.choices[0].logprobs
        if lp is None or not lp.token_logprobs:
            raise GpvError(f"the server at {self.base_url} returned no logprobs; it must support logprobs "
                           f"with echo (llama.cpp server: --logits_all; vLLM: on by default)")
        at = next(i for i, off in enumerate(lp.text_offset) if off >= start)
        return lp.tokens[at:], lp.token_logprobs[at:]

    def _first_token(self, text, label):
        tokens, _ = self._echo(text + label, len(text))
        return tokens[0]

    def _pair(self, task, sentence, value):
        text = prompt(task, sentence, value)
        r = self._call(prompt=text, max_tokens=1, logprobs=self.top_k)
        lp = r.choices[0].logprobs
        if lp is None or not lp.top_logprobs or not lp.top_logprobs[0]:
            raise GpvError(f"the server at {self.base_url} returned no logprobs; it must return top logprobs "
                           f"for completions (llama.cpp server: --logits_all true)")
        top = lp.top_logprobs[0]
        scores = []
        for label, token in zip(LABELS[task], self.label_tokens[task]):
            if token in top:
                scores.append(top[token])
            else:
                _, logprobs = self._echo(text + label, len(text))
                scores.append(logprobs[0] if logprobs[0] is not None else -math.inf)
        return renormalise(scores)

    def label_probs(self, task, pairs):
        if not pairs:
            return np.empty((0, len(LABELS[task])))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            rows = list(pool.map(lambda p: self._pair(task, *p), pairs))
        return np.array(rows)


def from_env(base_url=None, api_key=None, model=None, **kwargs):
    return OpenAIScorer(base_url or os.environ.get("OPENAI_BASE_URL"), api_key or os.environ.get("OPENAI_API_KEY"),
                        model, **kwargs)
