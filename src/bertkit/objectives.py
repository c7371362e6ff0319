"""Pre-training objectives: the one table `bertkit pretrain --objective NAME` looks up.

An objective is one entry of `OBJECTIVES`: which samples it builds, which model it trains, what one step's loss
and named statistics are, and how the trained model is saved. The data (data/pretraining.py) and the loop
(train/pretrain.py) only look entries up; neither knows an objective's name or its statistics.

  nsp   masked LM + next-sentence prediction (BERT paper, section 3.1), the default
  sop   masked LM + sentence-order prediction (ALBERT, Lan et al., 2020, section 3.1): the same [CLS] head as NSP
  none  masked LM alone, on contiguous full-sentence windows (RoBERTa, Liu et al., 2019, section 4.2)
  electra  replaced-token detection (Clark et al., 2020): a small generator fills the masked positions, the
           discriminator tells which tokens were replaced (bertkit/electra.py), on the same windows as none

Masking (which tokens are predicted) is an axis of its own: data/masking.py's MASKERS.

A new objective is one more entry and its functions. ELECTRA's, for one: instances packed_windows, pair_label
None; model ElectraPretrainer (generator and discriminator), built by new_model (a fresh pair for a config, or
--init from a BERT directory: a new generator), its run checkpoints restored by restore (both models' weights);
step, the generator's masked LM and the discriminator's per-token loss as {"mlm_loss", "mlm_accuracy",
"rtd_loss", "rtd_accuracy", "replaced_fraction"}, its replacements sampled with a torch.Generator seeded from
the batch's "sample_seed"; loss_weights {"mlm_loss": 1.0, "rtd_loss": 50.0} (the paper's lambda); save, the
discriminator (HF ElectraForPreTraining) with the generator in its generator/ subdirectory.

This module loads without torch (the `bertkit` command lists the names and their help before torch loads),
so each function imports what it uses when it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from bertkit.errors import BertkitError


def save_pretrained(model, directory: str) -> None:
    model.save_pretrained(directory)


def restore_weights(model, directory: str) -> None:
    """Every tensor of `model` from the model directory a run checkpoint holds."""
    from bertkit.checkpoint import load_state, read_weights

    report = load_state(model, read_weights(directory), source=directory)
    if report.missing:
        raise BertkitError(f"{directory}: checkpoint lacks {', '.join(report.missing)}",
                           hint="it was written by a different model; start a new --out")


@dataclass(frozen=True)
class Objective:
    """One pre-training objective. Statistics are {name: (sum, count)}, summed by the loop over micro-batches,
    ranks and a logging window and logged as sum / count under their names (metrics.jsonl): names end in
    _loss or _accuracy (the progress bar and curves.png show the accuracies), or are logged as they are
    (ELECTRA's replaced_fraction). A sum may be a 0-d tensor: the loop reads it
    after the backward pass, so that a GPU is not made to wait for it first (a loss sum in float64, so that
    it is the same number as loss.item() * count)."""

    help: str  # one line for `bertkit pretrain --help`
    # (corpus: PreparedCorpus, seq_len, seed, epoch) -> (N, 2) int64 rows [start, end) of [CLS] window [SEP]
    # samples, or (N, 5) [a_start, a_end, b_start, b_end, label] of [CLS] A [SEP] B [SEP] pairs
    instances: Callable
    pair_label: str | None  # the sample and batch key of a pair's label (the rows' 5th column); None: windows
    model: Callable[[], type]  # the class it trains: cls(config), cls.from_pretrained(dir), .save_pretrained(dir)
    # (model, batch) -> (the loss to backpropagate, {statistic: (sum, count)}); batch: data/pretraining.collate's,
    # plus "sample_seed", an int fixed by (seed, step, micro-batch) that a step which samples seeds its own rng with
    step: Callable
    loss_weights: dict[str, float]  # the logged "loss" = sum of weight x mean of these statistics, as `step` weighs them
    min_documents: int = 1  # the held-out split needs this many documents to be evaluated
    save: Callable = save_pretrained  # (model, directory): writes the model directory users load
    # (config, init_dir | None) -> the model to train; None: model()(config), or model().from_pretrained(init_dir)
    new_model: Callable | None = None
    restore: Callable = restore_weights  # (model, directory): a run checkpoint's model/ weights, to resume

    def build_model(self, config, init: str | None = None):
        """The model a run trains: new for `config`, or continued from the model directory `init`."""
        if self.new_model is not None:
            return self.new_model(config, init)
        cls = self.model()
        return cls.from_pretrained(init) if init else cls(config)


# ---- samples (data/pretraining.py) ----

def nsp_pairs(corpus, seq_len, seed, epoch):
    from bertkit.data.pretraining import make_nsp_instances

    return make_nsp_instances(corpus, seq_len, seed, epoch)


def sop_pairs(corpus, seq_len, seed, epoch):
    from bertkit.data.pretraining import make_sop_instances

    return make_sop_instances(corpus, seq_len, seed, epoch)


def packed_windows(corpus, seq_len, seed, epoch):
    from bertkit.data.pretraining import make_packed_instances

    return make_packed_instances(corpus, seq_len)  # the same windows every epoch; only their masks change


# ---- models (model.py) ----

def bert_for_pretraining() -> type:
    from bertkit.model import BertForPreTraining

    return BertForPreTraining


def bert_for_masked_lm() -> type:
    from bertkit.model import BertForMaskedLM

    return BertForMaskedLM


def electra_pretrainer() -> type:
    from bertkit.electra import ElectraPretrainer

    return ElectraPretrainer


def electra_model(config, init: str | None):
    """A generator and discriminator for `config` (the generator sized by electra.DEFAULT_GENERATOR_RATIO); with
    init, the pair an ELECTRA run saved (a directory with generator/), or a BERT directory's encoder as the
    discriminator and a new generator (a hidden size the ratio does not fit raises a BertkitError)."""
    import os

    from bertkit import electra

    if init is None:
        return electra.build_pretrainer(config)
    if os.path.isfile(os.path.join(init, electra.GENERATOR_DIR, "config.json")):
        return electra.ElectraPretrainer.from_pretrained(init)
    return electra.electra_from_bert_init(init)


def electra_restore(model, directory: str) -> None:
    model.load_weights(directory)


# ---- steps: loss and statistics ----

def mlm_statistics(out) -> dict:
    """Masked-LM loss and accuracy over the chosen positions (out.mlm_logits (N, V), out.mlm_targets (N,))."""
    count = out.mlm_targets.numel()
    return {"mlm_loss": (out.mlm_loss.detach().double() * count, count),
            "mlm_accuracy": ((out.mlm_logits.argmax(-1) == out.mlm_targets).sum(), count)}


def mlm_step(model, batch: dict):
    out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss, mlm_statistics(out)


def pair_step(model, batch: dict, *, name: str, label_key: str):
    """Masked LM plus a two-way task on the pooled [CLS] output (BertForPreTraining's `nsp` head, saved as
    HuggingFace's cls.seq_relationship), whose labels are batch[label_key] (B,); statistics name_loss, name_accuracy."""
    labels = batch[label_key]
    out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"], labels=batch["labels"], next_sentence_label=labels)
    n = labels.numel()
    return out.loss, {**mlm_statistics(out), f"{name}_loss": (out.nsp_loss.detach().double() * n, n),
                      f"{name}_accuracy": ((out.nsp_logits.argmax(-1) == labels).sum(), n)}


def electra_step(model, batch: dict):
    """ELECTRA's loss (electra.electra_loss: generator MLM + 50 x discriminator), the replacements sampled with a
    torch.Generator seeded from batch["sample_seed"] (torch's global one without it)."""
    import torch

    rng = None
    if batch.get("sample_seed") is not None:
        rng = torch.Generator(device=batch["input_ids"].device)
        rng.manual_seed(int(batch["sample_seed"]))
    loss, statistics = model(batch["input_ids"], batch["labels"], token_type_ids=batch["token_type_ids"],
                             attention_mask=batch["attention_mask"], rng=rng)
    return loss, {name: (total, int(count)) for name, (total, count) in statistics.items()}


OBJECTIVES: dict[str, Objective] = {
    "nsp": Objective(
        help="masked LM + next-sentence prediction (B follows A, or half of the time comes from another document)",
        instances=nsp_pairs, pair_label="next_sentence_label",  # 0 IsNext, 1 NotNext (HuggingFace's labels)
        model=bert_for_pretraining, step=partial(pair_step, name="nsp", label_key="next_sentence_label"),
        loss_weights={"mlm_loss": 1.0, "nsp_loss": 1.0},
        min_documents=2),  # a random B comes from another document
    "sop": Objective(
        help="masked LM + sentence-order prediction, as ALBERT (B is A's true next segment, swapped half of the "
             "time; needs documents of several sentences)",
        instances=sop_pairs, pair_label="sentence_order_label",  # 0 in order, 1 swapped (HuggingFace's ALBERT)
        model=bert_for_pretraining, step=partial(pair_step, name="sop", label_key="sentence_order_label"),
        loss_weights={"mlm_loss": 1.0, "sop_loss": 1.0}),
    "none": Objective(
        help="masked LM alone on contiguous windows across sentences and documents, as RoBERTa; trains and saves a "
             "BertForMaskedLM (no pooler, no NSP head)",
        instances=packed_windows, pair_label=None,
        model=bert_for_masked_lm, step=mlm_step,
        loss_weights={"mlm_loss": 1.0}),
    "electra": Objective(
        help="replaced-token detection, as ELECTRA: a generator 1/4 the width fills the masked positions and the "
             "discriminator tells which tokens were replaced, on the same windows as none; saves the discriminator "
             "(ElectraForPreTraining), the generator in model/generator",
        instances=packed_windows, pair_label=None,
        model=electra_pretrainer, new_model=electra_model, restore=electra_restore, step=electra_step,
        loss_weights={"mlm_loss": 1.0, "rtd_loss": 50.0}),  # electra.DISCRIMINATOR_WEIGHT, the paper's lambda
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise BertkitError(f"unknown objective {name!r}", hint=f"use one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]

