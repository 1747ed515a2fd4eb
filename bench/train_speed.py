"""gpv-train's throughput, packed against unpacked, on the same batches: training examples per second.

    python bench/train_speed.py [--batches 6] [--texts 4] [--threads N]

Each batch is TEXTS Touché23-ValueEval training premises (../shared/data/touche23; never the dev split),
each judged on the 10 basic values: TEXTS x 10 relevance examples. The batch goes through one training
micro-step (forward, loss, backward) of the built-in base with gpv-train's LoRA (r 8, last 15 layers,
bf16 autocast) twice: unpacked (one left-padded row per example after the shared task header's cache,
--no-pack) and packed (one row per text, every value's suffix in it under a 4-D tree mask, the default).
The two runs alternate batch by batch, so a slower moment of the machine falls on both. It also prints
the largest difference between the two forms' label logits, which should be bf16 rounding only.
"""

import argparse
import sys
import time

from touche import TOUCHE

from gpvtools.method.scoring import LABELS, first_label_tokens
from gpvtools.method.training import data as data_mod
from gpvtools.method.training.trainer import TrainConfig, encode, label_logits, pack, packed_logits, prepare
from gpvtools.runtimes.models import builtin_gguf


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--texts", type=int, default=4, help="texts per batch (x 10 values = examples)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from gpvtools.method.scoring.hf import cache_kwarg, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    judged = [j for j in data_mod.read(TOUCHE, "touche").judged if not data_mod.touche_is_dev(j.id)]
    judged = judged[:args.batches * args.texts]
    model, tokenizer, _ = load_model(builtin_gguf(), "cpu", "float32")
    cfg = TrainConfig(lora_r=8, lora_alpha=16, lora_layers=15)
    model = prepare(model, cfg, quantized=False)
    model.train()
    label_ids = {task: first_label_tokens(lambda t: tokenizer(t)["input_ids"], task) for task in LABELS}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    cache_arg = cache_kwarg(model)

    def step(form, examples):
        data = encode(tokenizer, examples, label_ids)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if form == "packed":
                rows, _ = pack(examples, data)
                logits = packed_logits(model, torch, rows, pad, device)
                targets = [t for row in rows for t in row[2]]
            else:
                logits = label_logits(model, torch, data, pad, device, cache_arg)
                targets = [row[1] for row in data]
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets))
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start, logits.detach().float()

    spent = {"unpacked": 0.0, "packed": 0.0}
    diff, n = 0.0, 0
    step("packed", data_mod.judged_examples(judged[:1]))  # warm-up of both paths, not counted
    step("unpacked", data_mod.judged_examples(judged[:1]))
    for b in range(args.batches):
        examples = data_mod.judged_examples(judged[b * args.texts:(b + 1) * args.texts])
        logits = {}
        for form in (("unpacked", "packed") if b % 2 == 0 else ("packed", "unpacked")):
            s, logits[form] = step(form, examples)
            spent[form] += s
        # pack() keeps each text's examples in order and texts in first-seen order, as judged_examples made them
        diff = max(diff, float((logits["packed"] - logits["unpacked"]).abs().max()))
        n += len(examples)
    print(f"{n} examples ({args.batches} batches of {args.texts} texts x 10 values), torch threads "
          f"{torch.get_num_threads()}")
    for form, s in spent.items():
        print(f"{form:<9} {n / s:8.2f} examples/s  ({s:.1f} s)")
    print(f"packed/unpacked: {spent['unpacked'] / spent['packed']:.2f}x; largest label-logit difference "
          f"{diff:.3f} (bf16)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
