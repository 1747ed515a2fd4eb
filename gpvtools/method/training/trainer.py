"""Fine-tuning a scorer on the relevance and valence tasks (paper App. A) with LoRA, QLoRA or fully.

The loss is the cross-entropy of the label's first token right after the prompt — exactly what
gpv-score reads — so nothing is spent on learning to echo the prompt.

Packed (the default): the examples of one text and task form one row — the prompt up to the value,
then every value's suffix ("Value: …\\nOutput:\\n"), each positioned and masked (a 4-D attention
mask) as if it followed the text alone, the prefix tree gpv-score's transformers backend evaluates
(scoring.hf.flattened_tree). A text judged on 10 values costs one pass over its tokens, not ten;
only the suffixes' last positions are projected onto the vocabulary. Unpacked (--no-pack): one
left-padded row per example, after a shared prefix's cache.

The loss is class-weighted (--balance, the default): each label of a task weighs in inversely to its
frequency in the training data, so a task whose labels are two-thirds "support" (ValueBench valence)
or mostly "no" (Touché relevance) does not teach the model to lean one way.
"""

import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ...streaming.atomic import AtomicFile
from ...streaming.errors import GpvError, MissingDependency
from ...streaming.signals import signals_held
from ..scoring import LABELS, first_label_tokens, prompt, shared_prefix


def _numpy():
    # Imported where used, so gpv-train --help and the data checks run on a core install.
    try:
        import numpy
    except ImportError:
        raise MissingDependency("gpv-train", "numpy", "cuda") from None
    return numpy


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
    pack: bool = True             # a text's examples of one task in one row (prefix tree)
    balance: bool = True          # class-weighted loss: each label of a task weighs in equally
    judged_epochs: float = None   # passes over the judged texts (Touché) in all; None: as many as epochs


class Progress:
    """A redrawn line on a terminal; on a log file (batch jobs) a line every `every` steps. The time left is
    estimated from the steps of this run: a run resumed at step FIRST has not spent its time on those."""

    def __init__(self, total, enabled, every=20, first=0):
        self.total, self.enabled, self.every, self.start = total, enabled, every, time.monotonic()
        self.first = first
        self.tty = sys.stderr.isatty()

    def update(self, step, loss):
        if not self.enabled or (not self.tty and step % self.every and step != self.total):
            return
        spent = time.monotonic() - self.start
        eta = spent / max(step - self.first, 1) * (self.total - step)
        line = (f"gpv-train: step {step}/{self.total}  loss {loss:.4f}  "
                f"{spent / 60:.1f} min, ~{eta / 60:.1f} min left")
        sys.stderr.write(f"\r{line} " if self.tty else f"{line}\n")
        sys.stderr.flush()

    def close(self):
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def class_weights(examples, balance, judged_share=1.0):
    """{(task, label): loss weight}: inverse label frequency within each task, mean 1 over its examples, as an
    epoch draws them (a judged example counts JUDGED_SHARE: epoch_rows)."""
    counts = {}
    for e in examples:
        counts[(e.task, e.label)] = counts.get((e.task, e.label), 0) + (min(1.0, judged_share) if e.judged else 1)
    if not balance:
        return dict.fromkeys(counts, 1.0)
    weights = {}
    for task in LABELS:
        present = {k: n for k, n in counts.items() if k[0] == task}
        total = sum(present.values())
        weights.update({k: total / (len(present) * n) for k, n in present.items()})
    return weights


def encode(tokenizer, examples, label_ids, weights=None):
    """[(prompt ids, target id, task, weight)] for examples."""
    out = []
    for e in examples:
        ids = tokenizer(prompt(e.task, e.text, e.value), add_special_tokens=True)["input_ids"]
        w = weights[(e.task, e.label)] if weights else 1.0
        out.append((ids, label_ids[e.task][LABELS[e.task].index(e.label)], e.task, w))
    return out


def pack(examples, data):
    """Rows of the packed form: [(prefix ids, [suffix ids], [target ids], [weights])], one per text and task,
    and whether each row's examples come from a judged text.

    DATA is encode(EXAMPLES); a row's prefix is what its prompts share, the suffixes the rest of each."""
    groups, judged = {}, {}
    for e, row in zip(examples, data):
        groups.setdefault((e.task, e.text), []).append(row)
        judged[(e.task, e.text)] = judged.get((e.task, e.text), True) and e.judged
    rows = []
    for same in groups.values():
        ids = [m[0] for m in same]
        common = shared_prefix(ids)
        rows.append((ids[0][:common], [x[common:] for x in ids], [m[1] for m in same], [m[3] for m in same]))
    return rows, list(judged.values())


def epoch_rows(judged, share, seed, epoch):
    """Indices of the rows an epoch trains on: every row whose JUDGED flag is false, and a SHARE of the others.

    The judged rows take turns in a fixed seeded order, epoch after epoch, so that over E epochs each is seen
    about E x SHARE times (--judged-epochs E x SHARE): many judged texts can train fewer passes than few items.
    """
    rows = [i for i, j in enumerate(judged) if not j]
    turn = [i for i, j in enumerate(judged) if j]
    if share >= 1 or not turn:
        return rows + turn
    random.Random(seed).shuffle(turn)
    take = max(1, round(share * len(turn)))
    start = (epoch * take) % len(turn)
    return rows + [turn[(start + k) % len(turn)] for k in range(take)]


def epoch_batches(data, batch_size, seed, epoch, judged=None, share=1.0):
    """Micro-batches of about batch_size examples, in a seeded order, over epoch_rows.

    Unpacked, DATA is examples and a micro-batch is one task's (so they share the task header); packed,
    DATA is rows and a micro-batch takes whole rows until it holds batch_size examples or more.
    """
    rng = random.Random(seed * 1000 + epoch)
    order = epoch_rows(judged or [False] * len(data), share, seed, epoch)
    if data and len(data[0]) == 4 and isinstance(data[0][1], list):
        rng.shuffle(order)
        batches, batch, size = [], [], 0
        for i in order:
            batch.append(i)
            size += len(data[i][1])
            if size >= batch_size:
                batches.append(batch)
                batch, size = [], 0
        if batch:
            batches.append(batch)
        return batches
    batches = []
    for task in LABELS:
        idx = [i for i in order if data[i][2] == task]
        rng.shuffle(idx)
        batches += [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches


def packed_logits(model, torch, rows, pad_id, device):
    """Next-token logits after every suffix of ROWS (packed rows), [n suffixes, vocab], with gradients."""
    from ..scoring.hf import flattened_tree, tree_logits

    np = _numpy()

    ids, positions, allowed, last = flattened_tree(0, [(own, sfx) for own, sfx, _, _ in rows], pad_id)
    for b, (own, sfx, _, _) in enumerate(rows):  # padding attends itself, so no query row is all masked
        k = np.arange(len(own) + sum(map(len, sfx)), ids.shape[1])
        allowed[b, k, k] = True
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = next(p for p in base.parameters() if p.is_floating_point()).dtype
    return tree_logits(torch, base.get_decoder(), base.get_output_embeddings(),
                       getattr(base.config, "final_logit_softcapping", None), (ids, positions, allowed, last), dtype,
                       device, use_cache=False)


def label_logits(model, torch, rows, pad_id, device, cache_arg):
    """Next-token logits after each prompt in ROWS, [B, vocab], with gradients.

    The prefix that all rows share (the task header at least) runs once and its KV cache is
    repeated over the batch; the rest is left-padded after it, the pads masked out, so the last
    position of every row is its own "Output:\n" and only there are logits made.
    """
    from ..scoring.hf import output_cache

    common = shared_prefix([r[0] for r in rows])
    cache = None
    if common:
        prefix = torch.tensor([rows[0][0][:common]], device=device)
        cache = output_cache(model(input_ids=prefix, use_cache=True))
        cache.batch_repeat_interleave(len(rows))
    suffixes = [r[0][common:] for r in rows]
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


def train(model, tokenizer, examples, cfg, out_dir, *, resume=False, progress=True):
    """Train in place; checkpoints under out_dir/checkpoint let an interrupted run go on."""
    import torch

    np = _numpy()

    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    label_ids = {task: first_label_tokens(lambda t: tokenizer(t)["input_ids"], task) for task in LABELS}
    share = cfg.judged_epochs / cfg.epochs if cfg.judged_epochs is not None and cfg.epochs else 1.0
    weights = class_weights(examples, cfg.balance, share)
    data = encode(tokenizer, examples, label_ids, weights)
    judged = [e.judged for e in examples]
    if cfg.pack:
        data, judged = pack(examples, data)

    def batches_of(epoch):
        return epoch_batches(data, cfg.batch_size, cfg.seed, epoch, judged, share)

    per_epoch = len(batches_of(0))
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
    bar = Progress(total_steps, progress, every=cfg.save_every, first=step)
    model.train()
    micro = 0
    batches = []
    epoch = 0
    seen, started = 0, time.monotonic()
    while step < total_steps:
        if not batches:
            batches = batches_of(epoch)
            epoch += 1
        batch_idx, batches = batches[0], batches[1:]
        micro += 1
        if micro <= step * cfg.accumulation:  # replay the data order up to the checkpoint
            continue
        rows = [data[i] for i in batch_idx]
        if cfg.pack:
            targets = [t for row in rows for t in row[2]]
            weight = [w for row in rows for w in row[3]]
        else:
            targets, weight = [row[1] for row in rows], [row[3] for row in rows]
        targets = torch.tensor(targets, device=device)
        weight = torch.tensor(weight, device=device, dtype=torch.float32)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            if cfg.pack:
                logits = packed_logits(model, torch, rows, pad_id, device)
            else:
                logits = label_logits(model, torch, rows, pad_id, device, cache_arg)
        each = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        loss = (each * weight).sum() / weight.sum() / cfg.accumulation
        loss.backward()
        seen += len(targets)
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
    spent = time.monotonic() - started
    return {"steps": total_steps, "examples": len(examples), "rows": len(data),
            "final_loss": float(np.mean(losses[-LOSS_WINDOW:])) if losses else None,
            "examples_per_s": round(seen / spent, 2) if seen and spent > 0 else None,
            "class_weights": {f"{t}:{label}": round(w, 4) for (t, label), w in sorted(weights.items())}}


def _save_checkpoint(torch, model, optimizer, scheduler, step, path, losses):
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    with signals_held(), AtomicFile(path) as f:  # a signal inside torch.save would surface as its RuntimeError
        torch.save({"weights": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "step": step, "losses": losses}, f)


def config_dict(cfg):
    d = asdict(cfg)
    d["targets"] = list(cfg.targets)
    return d
