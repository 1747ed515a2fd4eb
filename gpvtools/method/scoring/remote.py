"""The openai backend: any OpenAI-compatible completions endpoint that returns top logprobs.

This is the scale-out path (vLLM with prefix caching, llama.cpp's server). Each pair is one
completion of one token with the top-k log-probabilities; a label whose first token is not among
them is asked for directly, so a probability is never guessed. Which token string starts each
label is learnt once at start-up by echoing a prompt with the label, since the server's tokenizer
is not at hand here.

Asking for a label directly means echoing the prompt with the label and reading that token's
log-probability, where the server follows OpenAI's convention (token_logprobs[i] is log P(tokens[i] |
tokens[:i]); vLLM does). llama-cpp-python's server does so only for models that add a BOS token; for
others (SmolLM2) entry i holds tokens[i] under the distribution *after* it, which no position of the
echo turns into the wanted number. So the convention is probed once at start-up, on a token whose
log-probability the plain completion gives: the echo is used only where it reads that number back;
otherwise the completion's top-k is widened until the label is in it (llama-cpp-python sets no cap).
"""

import math
from concurrent.futures import ThreadPoolExecutor

from ...runtimes.server import Server
from ...streaming.errors import BadRecord, GpvError
from . import LABELS, RELEVANCE, Decision, LabelScorer, prompt, renormalise

ALIGNED, SHIFTED = "aligned", "shifted"  # how the server's echo logprobs line up (see the module's doc)
# Echo and completion read the same distribution; they may differ by numeric noise of the batch shape.
PROBE_TOLERANCE = 0.05  # nats
WIDEN = 10  # each widening asks for this many times more top log-probabilities


class OpenAIScorer(LabelScorer):
    backend = "openai"

    def __init__(self, server, model=None, top_logprobs=20, concurrency=4, decision=None):
        """SERVER: a ServerSettings (the one transport gpv-parse and gpv-elicit use too)."""
        self.decision = decision or Decision()
        self.server = Server(server)
        self.base_url = server.base_url
        self.top_k = top_logprobs
        self.concurrency = concurrency
        self.model = model or self.server.only_model()
        self.name = self.model
        try:  # start-up: a request that fails here fails every record, so it ends the run
            self.label_tokens = {task: [self._first_token(prompt(task, "x", "y"), label) for label in LABELS[task]]
                                 for task in LABELS}
            self.echo_convention = self._probe_echo()
        except BadRecord as e:
            raise GpvError(f"the server at {self.base_url} cannot score: {e.message}") from None

    def _call(self, **kwargs):
        return self.server.complete(model=self.model, temperature=0, **kwargs)

    def _echo(self, text, start, logprobs=1):
        """The echo of TEXT: (its logprobs object, the index of the first token at character START or after)."""
        r = self._call(prompt=text, max_tokens=1, echo=True, logprobs=logprobs)
        lp = r.choices[0].logprobs
        if lp is None or not lp.token_logprobs:
            raise GpvError(f"the server at {self.base_url} returned no logprobs; it must support logprobs "
                           f"with echo (llama.cpp server: --logits_all; vLLM: on by default)")
        at = next((i for i, off in enumerate(lp.text_offset) if off >= start), None)
        if at is None:
            raise GpvError(f"the server at {self.base_url} did not echo the prompt (its answer has no token at "
                           f"character {start})")
        return lp, at

    def _first_token(self, text, label):
        lp, at = self._echo(text + label, len(text))
        return lp.tokens[at]

    def _top(self, text, k):
        """The top-K log-probabilities {token: logprob} of the token after TEXT."""
        r = self._call(prompt=text, max_tokens=1, logprobs=k)
        lp = r.choices[0].logprobs
        if lp is None or not lp.top_logprobs or not lp.top_logprobs[0]:
            raise GpvError(f"the server at {self.base_url} returned no logprobs; it must return top logprobs "
                           f"for completions (llama.cpp server: --logits_all true)")
        return lp.top_logprobs[0]

    def _probe_echo(self):
        """ALIGNED if the echo reads back a token's log-probability as the completion gives it, SHIFTED if it
        is one position early (llama-cpp-python without BOS), None if neither could be seen."""
        text = prompt(RELEVANCE, "x", "y")
        top = self._top(text, self.top_k)
        labels = [t for t in self.label_tokens[RELEVANCE] if t in top]
        candidates = labels + [t for t in sorted(top, key=top.get, reverse=True) if t not in labels]
        for token in candidates[:5]:
            lp, at = self._echo(text + token, len(text), logprobs=self.top_k)
            if lp.tokens[at] != token or lp.text_offset[at] != len(text) or at < 1:
                continue  # the server splits the text differently there: not a probe
            expected = top[token]
            here = lp.token_logprobs[at]
            before = (lp.top_logprobs[at - 1] or {}).get(token)
            aligned = here is not None and abs(here - expected) <= PROBE_TOLERANCE
            shifted = before is not None and abs(before - expected) <= PROBE_TOLERANCE
            if aligned != shifted:
                return ALIGNED if aligned else SHIFTED
        return None

    def _asked_for(self, text, label, token):
        """The log-probability of TOKEN (LABEL's first) after TEXT, when it is not in the top-k."""
        if self.echo_convention == ALIGNED:
            lp, at = self._echo(text + label, len(text))
            if lp.tokens[at] != token:
                raise GpvError(f"the server split {label!r} after this prompt into {lp.tokens[at]!r}…, not "
                               f"{token!r}…; its probability cannot be read")
            return lp.token_logprobs[at] if lp.token_logprobs[at] is not None else -math.inf
        k = self.top_k
        while True:
            k *= WIDEN
            try:
                top = self._top(text, k)
            except BadRecord as e:  # the server caps the top-k
                raise GpvError(f"label {label!r} is not among the top {k // WIDEN} log-probabilities, the server's "
                               f"echo log-probabilities cannot be read ({self._echo_state()}), and a wider top-k "
                               f"was refused: {e}") from None
            if token in top:
                return top[token]
            if len(top) < k:  # the server gave all it would
                raise GpvError(f"label {label!r}: the server at {self.base_url} returned no log-probability for "
                               f"its first token {token!r}")

    def _echo_state(self):
        return ("they are shifted by one token" if self.echo_convention == SHIFTED
                else "they did not match the completion's")

    def _pair(self, task, sentence, value):
        text = prompt(task, sentence, value)
        top = self._top(text, self.top_k)
        scores = [top[token] if token in top else self._asked_for(text, label, token)
                  for label, token in zip(LABELS[task], self.label_tokens[task])]
        return renormalise(scores)

    def label_probs(self, task, pairs):
        import numpy as np

        if not pairs:
            return np.empty((0, len(LABELS[task])))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            rows = list(pool.map(lambda p: self._pair(task, *p), pairs))
        return np.array(rows)
