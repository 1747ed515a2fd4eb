"""Fine-tuning a scorer on the relevance and valence tasks (paper App. A) with LoRA, QLoRA or fully.

The loss is the cross-entropy of the label's first token right after the prompt — exactly what
gpv-score reads — so nothing is spent on learning to echo the prompt. Prompts are left-padded
so the last position of every row is its "Output:\\n" and only that position's logits are made.
"""

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import GpvError
from ..scoring import LABELS, RELEVANCE, VALENCE, first_label_tokens, prompt, shared_prefix

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    epochs: float = 4.0
    batch_size: int = 16          # examples per forward pass
    accumulation: int = 2         # forward passes per optimizer step
    learning_rate: float = 3e-4
    warmup: float = 0.05          # fraction of steps
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    targets: tuple = DEFAULT_TARGETS
    lora_layers: int = 0          # adapt only the last N layers (0: all); backward then stops below them
    full: bool = False            # full fine-tuning instead of LoRA
    seed: int = 0
    bf16: bool = True             # bf16 autocast (CPU and CUDA)
    save_every: int = 20          # optimizer steps between checkpoints
    max_steps: int = 0            # stop early (0: all epochs); for smoke runs


class Progress:
    """A redrawn line on a terminal; on a log file (batch jobs) a line every `every` steps."""

    def __init__(self, total, enabled, every=20):
        self.total, self.enabled, self.every, self.start = total, enabled, every, time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, step, loss):
        if not self.enabled or (not self.tty and step % self.every and step != self.total):
            return
        spent = time.monotonic() - self.start
        eta = spent / max(step, 1) * (self.total - step)
        line = (f"gpv-train: step {step}/{self.total}  loss {loss:.4f}  "
                f"{spent / 60:.1f} min, ~{eta / 60:.1f} min left")
        sys.stderr.write(f"\r{line} " if self.tty else f"{line}\n")
        sys.stderr.flush()

    def close(self):
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def encode(tokenizer, examples, label_ids):
    """[(prompt ids, target id, task)] for examples."""
    out = []
    for e in examples:
        ids = tokenizer(prompt(e.task, e.text, e.value), add_special_tokens=True)["input_ids"]
        out.append((ids, label_ids[e.task][LABELS[e.task].index(e.label)], e.task))
    return out


def epoch_batches(data, batch_size, seed, epoch):
    """Micro-batches of one task each (so they share the task header), in a seeded order."""
    rng = random.Random(seed * 1000 + epoch)
    batches = []
    for task in LABELS:
        idx = [i for i, row in enumerate(data) if row[2] == task]
        rng.shuffle(idx)
        batches += [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches


def label_logits(model, torch, rows, pad_id, device, cache_arg):
    """Next-token logits after each prompt in ROWS, [B, vocab], with gradients.

    The prefix that all rows share (the task header at least) runs once and its KV cache is
    repeated over the batch; the rest is left-padded after it, the pads masked out, so the last
    position of every row is its own "Output:\n" and only there are logits made.
    """
    from ..scoring.hf import output_cache

    common = shared_prefix([r for r, _, _ in rows])
    cache = None
    if common:
        prefix = torch.tensor([rows[0][0][:common]], device=device)
        cache = output_cache(model(input_ids=prefix, use_cache=True))
        cache.batch_repeat_interleave(len(rows))
    suffixes = [r[common:] for r, _, _ in rows]
    width = max(map(len, suffixes))
    input_ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in suffixes], device=device)
    tail = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in suffixes], device=device)
    mask = torch.cat([torch.ones(len(rows), common, dtype=tail.dtype, device=device), tail], dim=1)
    positions = common + (tail.cumsum(-1) - 1).clamp(min=0)
    kwargs = {cache_arg: cache} if cache is not None else {}
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1,
                use_cache=cache is not None, **kwargs)
    return out.logits[:, -1, :]


def prepare(model, cfg, quantized):
    """The model to train: LoRA (peft) on cfg.targets, or every weight with cfg.full."""
    if cfg.full:
        if quantized:
            raise GpvError("full fine-tuning cannot train 4-bit weights; drop --load-in-4bit or use LoRA")
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    try:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    except ImportError:
        raise GpvError("LoRA training needs peft: pip install 'gpvtools[cuda]'") from None
    if quantized:
        model = prepare_model_for_kbit_training(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in cfg.targets if t in present]
    if not targets:
        raise GpvError(f"none of the LoRA targets {', '.join(cfg.targets)} is a module of this model")
    layers = None
    if cfg.lora_layers:
        n = model.config.num_hidden_layers
        layers = list(range(max(0, n - cfg.lora_layers), n))
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", bias="none", layers_to_transform=layers)
    return get_peft_model(model, lora)


LOSS_WINDOW = 50  # micro-batches averaged into the reported final loss, and kept in checkpoints for it


def train(model, tokenizer, examples, cfg, out_dir, resume=False, progress=True):
    """Train in place; checkpoints under out_dir/checkpoint let an interrupted run go on."""
    import torch

    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    label_ids = {task: first_label_tokens(lambda t: tokenizer(t)["input_ids"], task) for task in LABELS}
    data = encode(tokenizer, examples, label_ids)
    per_epoch = len(epoch_batches(data, cfg.batch_size, cfg.seed, 0))
    total_micro = math.ceil(per_epoch * cfg.epochs)
    total_steps = math.ceil(total_micro / cfg.accumulation)
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    warm = max(1, int(total_steps * cfg.warmup))

    def lr_factor(s):  # linear warm-up, then linear decay to zero
        return (s + 1) / warm if s < warm else max(0.0, (total_steps - s) / max(1, total_steps - warm))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    ckpt = Path(out_dir) / "checkpoint" / "state.pt"
    step = 0
    losses = []
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        trainable = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
        for name, tensor in state["weights"].items():
            trainable[name].data.copy_(tensor)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        losses = list(state.get("losses", []))  # checkpoints before this field: no final loss on resume
        sys.stderr.write(f"gpv-train: resuming at step {step}/{total_steps} from {ckpt}\n")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    from ..scoring.hf import cache_kwarg

    cache_arg = cache_kwarg(model)
    bar = Progress(total_steps, progress, every=cfg.save_every)
    model.train()
    micro = 0
    batches = []
    epoch = 0
    while step < total_steps:
        if not batches:
            batches = epoch_batches(data, cfg.batch_size, cfg.seed, epoch)
            epoch += 1
        batch_idx, batches = batches[0], batches[1:]
        micro += 1
        if micro <= step * cfg.accumulation:  # replay the data order up to the checkpoint
            continue
        rows = [data[i] for i in batch_idx]
        targets = torch.tensor([t for _, t, _ in rows], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = label_logits(model, torch, rows, pad_id, device, cache_arg)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets) / cfg.accumulation
        loss.backward()
        losses.append(loss.item() * cfg.accumulation)
        if micro % cfg.accumulation == 0:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(step, float(np.mean(losses[-cfg.accumulation * 10:])))
            if step % cfg.save_every == 0 or step == total_steps:
                _save_checkpoint(torch, model, optimizer, scheduler, step, ckpt, losses[-LOSS_WINDOW:])
    bar.close()
    model.eval()
    return {"steps": total_steps, "examples": len(data), "final_loss": float(np.mean(losses[-LOSS_WINDOW:])) if losses else None}


def _save_checkpoint(torch, model, optimizer, scheduler, step, path, losses):
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    tmp = path.with_suffix(".tmp")
    torch.save({"weights": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, "losses": losses}, tmp)
    os.replace(tmp, path)


def evaluate(scorer, examples):
    """Relevance and valence accuracy of a scorer on labelled examples, with confusion counts."""
    report = {}
    for task in (RELEVANCE, VALENCE):
        rows = [e for e in examples if e.task == task]
        if not rows:
            continue
        probs = scorer.label_probs(task, [(e.text, e.value) for e in rows])
        labels = LABELS[task]
        if task == RELEVANCE:
            predicted = ["yes" if p[0] > 0.5 else "no" for p in probs]
        else:
            predicted = [labels[int(np.argmax(p))] for p in probs]
        confusion = {f"{t}->{p}": 0 for t in labels for p in labels}
        for e, p in zip(rows, predicted):
            confusion[f"{e.label}->{p}"] += 1
        correct = sum(e.label == p for e, p in zip(rows, predicted))
        report[task] = {"n": len(rows), "accuracy": round(correct / len(rows), 4),
                        "confusion": {k: v for k, v in confusion.items() if v}}
    return report


def config_dict(cfg):
    d = asdict(cfg)
    d["targets"] = list(cfg.targets)
    return d
