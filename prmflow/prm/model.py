r"""A process reward model: a pretrained backbone plus an ensemble of step heads.

EDU-PRM (arXiv 2503.22233) trains a discriminative PRM on Monte-Carlo step labels; ActPRM
(arXiv 2504.10559) puts `num_heads` heads on one backbone and reads the spread of their scores
as uncertainty. Each step ends in a dedicated separator token `<step>`; head h reads the
backbone's last hidden state there, giving a logit z_{h,b,k} for step k of example b and a
score sigmoid(z_{h,b,k}). Per step, `head_mean` and `head_std` summarise the heads.

Loss (`step_loss`): binary cross entropy at the separators only, averaged over the unmasked
(head, step) pairs P, plus an L2 pull of each head toward its initial weights theta_h^0:

    L = (1/|P|) sum_{(h,b,k) in P} BCE(z_{h,b,k}, y_{b,k})  +  l2_to_init * sum_h ||theta_h - theta_h^0||^2
    BCE(z, y) = -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]
    P = {(h, b, k) : m_{h,b} = 1 and step k of example b was kept (not truncated)}
    m_{h,b} = 1[u(seed, h, id_b) < head_data_keep],   u = a hash of (seed, h, id_b) mapped into [0, 1)

y is the hard label (0/1) or the soft label (fraction of rollouts that reach the answer).
The mask m gives every head its own random subset of the data (ActPRM), and is reproducible
because it depends only on the example id.

Likelihood features (`lm_features`, optional). A PRM that starts from the policy also holds
the policy's next-token distribution, and a sampled slip is a token that distribution found
unlikely. With `lm_features` the backbone keeps its LM head, and each head reads, besides the
hidden state at the separator, three statistics of step k's own tokens t (separators skipped):

    f_k = ( min_t log p(x_t | x_<t),  mean_t log p(x_t | x_<t),  max_t H(p(. | x_<t)) )
    z_{h,b,k} = head_h([ hidden_{b, sep_k} ; f_{b,k} ])

where p is the backbone's own softmax (the separator token excluded from it), computed in a
second pass over the solution with the separators taken out, so the LM reads exactly what the
policy wrote. Everything stays trainable: the features move with the backbone.

Where each step's separator sits, for any tokenizer, is `prmflow.prm.tokenization`.

Saving. A PRM whose backbone is still the checkpoint it was built on (a frozen backbone) saves
its heads, prmflow_prm.json and prm_backbone.json, a `BackboneRef` (the path as given, sha256s of
the weights and tokenizer); loading rebuilds the backbone from there, bit for bit, and refuses a
changed one. A trained backbone (full fine-tuning, merged LoRA) is saved whole, in HF format:

    frozen:  prm_backbone.json  prm_heads.safetensors  prmflow_prm.json
    trained: config.json  model.safetensors  tokenizer*.json  prm_heads.safetensors  prmflow_prm.json
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from prmflow.io import atomic_path
from prmflow.options import PRMOptions
from prmflow.prm.backbone import BackboneRef, dtype_name, resolve_backbone, tokenizer_digest, weights_digest
from prmflow.prm.tokenization import TokenizedSteps, add_step_token, collate, step_index, tokenize_steps

if TYPE_CHECKING:
    from peft import PeftModel

CONFIG_NAME = "prmflow_prm.json"
HEADS_NAME = "prm_heads.safetensors"
BACKBONE_REF_NAME = "prm_backbone.json"


@dataclass(frozen=True)
class PRMConfig(PRMOptions):
    """The PRM's architecture and scoring limits; saved as prmflow_prm.json beside the model.

    The heads' knobs (num_heads, head_hidden, head_data_keep, l2_to_init, max_len, lm_features,
    label_type, add_bos, step_tokenization) are declared in prmflow.options.PRMOptions."""

    step_token: str = "<step>"
    """separator appended after every step, added to the tokenizer as a special token"""
    seed: int = 0
    """seeds head initialisation and the per-head data mask"""

    def __post_init__(self) -> None:
        self.check_prm()


def head_data_mask(example_ids: Sequence[str], num_heads: int, keep: float, seed: int) -> torch.Tensor:
    """m_{h,b} = 1[u(seed, h, id_b) < keep], a reproducible coin per (head, example). -> (E, B) bool.

    >>> head_data_mask(["p0", "p1", "p2", "p3"], num_heads=2, keep=0.5, seed=0).int().tolist()
    [[1, 0, 0, 0], [0, 1, 0, 1]]
    >>> head_data_mask(["p0", "p1"], num_heads=2, keep=1.0, seed=0).all().item()   # keep = 1: no mask
    True
    """

    def u(h: int, i: str) -> float:
        digest = hashlib.blake2b(f"{seed}/{h}/{i}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return torch.tensor([[u(h, str(i)) < keep for i in example_ids] for h in range(num_heads)], dtype=torch.bool)


# --------------------------------------------------------------------------- loss


def step_bce(
    logits: torch.Tensor, label_positions: torch.Tensor, targets: torch.Tensor, head_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The BCE sum over the unmasked (head, step) pairs P, and |P|. Padded positions are -1.

    logits (E, B, T), label_positions (B, S), targets (B, S) in [0, 1], head_mask (E, B) bool.
    """
    E = logits.shape[0]
    valid = label_positions >= 0  # (B, S)
    z = logits.gather(2, label_positions.clamp(min=0).unsqueeze(0).expand(E, -1, -1))  # (E, B, S)
    y = targets.to(z.dtype).unsqueeze(0).expand_as(z)  # (E, B, S)
    pairs = head_mask.unsqueeze(-1) & valid.unsqueeze(0)  # (E, B, S)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")  # (E, B, S)
    return torch.where(pairs, bce, torch.zeros_like(bce)).sum(), pairs.sum()


def step_loss(
    logits: torch.Tensor,
    label_positions: torch.Tensor,
    targets: torch.Tensor,
    head_mask: torch.Tensor,
    sq_dist_to_init: torch.Tensor | float = 0.0,
    l2_to_init: float = 0.0,
) -> torch.Tensor:
    """L = (1/|P|) sum_P BCE(z, y) + l2_to_init * sum_h ||theta_h - theta_h^0||^2 (module docstring).

    `sq_dist_to_init` is `PRM.sq_dist_to_init()`. With no unmasked pair the BCE term is 0.
    """
    total, n_pairs = step_bce(logits, label_positions, targets, head_mask)
    return total / n_pairs.clamp(min=1) + l2_to_init * sq_dist_to_init


# --------------------------------------------------------------------------- likelihood features

N_LM_FEATURES = 3
LOGP_FLOOR = -30.0
"""log-probabilities are clamped here so that one impossible token cannot dominate a feature"""
CHUNK_ELEMENTS = 1 << 24
"""full-vocabulary temporaries of `lm_step_features` hold at most this many floats per pass
(a 262k vocabulary is then 64 positions at a time, not all 512 at once)"""


def lm_step_features(
    lm_logits: torch.Tensor | LogitsAt, input_ids: torch.Tensor, steps: torch.Tensor, exclude_id: int | None = None
) -> torch.Tensor:
    """f_k (module docstring) of every step of every row of a batch WITHOUT separators. -> (B, S, 3).

    lm_logits (B, T, V) from the LM on input_ids (B, T); steps (B, T) is k at the tokens of
    step k and -1 elsewhere (prompt, padding); S = 1 + the largest k. Token t is scored by the
    distribution at t - 1; `exclude_id` (the separator) is taken out of that softmax. A step
    with no scorable token gets (0, 0, 0), the features of a certain step. `lm_logits` may also
    be a `LogitsAt` that computes the logits of a few positions at a time.
    """
    B, T = input_ids.shape
    V = lm_logits.vocab_size if isinstance(lm_logits, LogitsAt) else lm_logits.shape[-1]
    logits_at = lm_logits if isinstance(lm_logits, LogitsAt) else lambda a, b: lm_logits[:, a:b]
    chunk = max(1, CHUNK_ELEMENTS // max(1, B * V))  # positions per pass: full-vocab temporaries stay ~64 MB
    lp_chunks, ent_chunks = [], []
    for a in range(0, T - 1, chunk):  # the distributions that produced tokens t = a + 1 .. b
        b = min(T - 1, a + chunk)
        logits = logits_at(a, b).float()
        if exclude_id is not None:
            logits = logits.clone()
            logits[..., exclude_id] = float("-inf")
        logp = logits.log_softmax(-1)  # (B, b - a, V)
        ent_chunks.append(-(logp.exp() * logp.clamp(min=LOGP_FLOOR)).sum(-1))
        lp_chunks.append(logp.gather(2, input_ids[:, a + 1 : b + 1].unsqueeze(-1)).squeeze(-1).clamp(min=LOGP_FLOOR))
    device = input_ids.device
    tok_logp = torch.cat(lp_chunks, 1) if lp_chunks else torch.zeros(B, 0, device=device)  # (B, T-1)
    entropy = torch.cat(ent_chunks, 1) if ent_chunks else torch.zeros(B, 0, device=device)  # (B, T-1)
    step = steps[:, 1:]
    S = int(steps.max().item()) + 1 if steps.numel() else 0
    seg = torch.where(step >= 0, step, torch.full_like(step, S))  # non-step tokens into a spare slot
    member = (step >= 0).float()
    lp_min = torch.zeros(B, S + 1, device=device).scatter_reduce(1, seg, tok_logp, "amin", include_self=False)
    lp_sum = torch.zeros(B, S + 1, device=device).scatter_add(1, seg, tok_logp * member)
    count = torch.zeros(B, S + 1, device=device).scatter_add(1, seg, member)
    ent_max = torch.zeros(B, S + 1, device=device).scatter_reduce(1, seg, entropy, "amax", include_self=False)
    empty = count == 0
    lp_min = torch.where(empty, torch.zeros_like(lp_min), lp_min)
    ent_max = torch.where(empty, torch.zeros_like(ent_max), ent_max)
    lp_mean = lp_sum / count.clamp(min=1)
    return torch.stack([lp_min, lp_mean, ent_max], -1)[:, :S]  # (B, S, 3)


class LogitsAt:
    """The causal LM's logits at positions [a, b) from its last hidden states, a few positions
    at a time, so that (B, T, V) never exists at once (V = 262k for Gemma-3). Applies the LM
    head and, where the model has it, final-logit soft-capping (Gemma-2/3); `check` compares
    the last position with the model's own forward once, so another post-processing is caught."""

    def __init__(self, lm: PreTrainedModel | PeftModel, hidden: torch.Tensor):
        self.lm, self.hidden = lm, hidden  # hidden (B, T, H)
        self.head = lm.get_output_embeddings()
        self.vocab_size = self.head.weight.shape[0]
        self.cap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None)

    def __call__(self, a: int, b: int) -> torch.Tensor:
        logits = self.head(self.hidden[:, a:b])  # (B, b - a, V)
        return logits if not self.cap else torch.tanh(logits / self.cap) * self.cap

    def check(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        T = input_ids.shape[1]
        ref = self.lm(input_ids=input_ids[:1], attention_mask=attention_mask[:1], logits_to_keep=1).logits[0, -1]
        if not torch.allclose(self(T - 1, T)[0, 0].float(), ref.float(), rtol=1e-3, atol=1e-3):
            raise RuntimeError(
                f"{type(self.lm).__name__} post-processes its logits in a way LogitsAt does not "
                f"reproduce; lm_features on it needs its full logits (raise CHUNK_ELEMENTS)"
            )


ONE_PASS_LOGITS = 1 << 26
"""up to this many B * T * V floats (256 MB) the LM's logits come from one forward (as always for
the tiny policy); above it from `LogitsAt`, a few positions at a time"""


# --------------------------------------------------------------------------- model


class Head(torch.nn.Module):
    """One ensemble_head: hidden states (B, T, H) -> logits (B, T). Remembers its initial weights."""

    def __init__(self, hidden_size: int, head_hidden: int):
        super().__init__()
        if head_hidden == 0:
            self.net: torch.nn.Module = torch.nn.Linear(hidden_size, 1)
        else:
            self.net = torch.nn.Sequential(
                torch.nn.Linear(hidden_size, head_hidden), torch.nn.GELU(), torch.nn.Linear(head_hidden, 1)
            )
        for name, p in self.net.named_parameters():  # theta_h^0, saved and moved with the head
            self.register_buffer("init_" + name.replace(".", "_"), p.detach().clone())

    def sq_dist_to_init(self) -> torch.Tensor:
        """||theta_h - theta_h^0||^2 over all of the head's weights and biases."""
        return sum(
            ((p - getattr(self, "init_" + n.replace(".", "_"))) ** 2).sum() for n, p in self.net.named_parameters()
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden).squeeze(-1)  # (B, T)


@dataclass
class StepScores:
    """Scores of the kept steps of one solution; truncated steps (cut from the end) get none."""

    head_mean: list[float]
    """per kept step, the mean over heads of sigmoid(z_h); len = num_steps - n_truncated_steps"""
    head_std: list[float]
    """per kept step, the population std over heads (0.0 for a single head)"""
    per_head: list[list[float]]
    """(num_heads, kept steps) sigmoid scores"""
    n_truncated_steps: int
    """steps dropped from the end for context, which have no score"""

    def head_mean_padded(self) -> list[float]:
        """One score per step: truncated steps repeat the last kept score (for consumers such as
        `evaluate_subsets` that need len == num_steps)."""
        return self.head_mean + self.head_mean[-1:] * self.n_truncated_steps


class PRM(torch.nn.Module):
    """backbone (AutoModel, no LM head) + `num_heads` heads over its last hidden state.

    Any AutoModel checkpoint works: a causal LM (Llama, Qwen2) loads its base model, and step k
    sees only what precedes its separator. An encoder (BERT) loads too, but attends both ways,
    so step k's score also sees the later steps. With `cfg.lm_features` the backbone is the
    whole causal LM (AutoModelForCausalLM), LM head included.
    """

    def __init__(self, backbone: PreTrainedModel, tokenizer: Any, cfg: PRMConfig):
        super().__init__()
        if cfg.step_token not in tokenizer.get_added_vocab():
            raise ValueError(f"tokenizer has no {cfg.step_token!r}; build the PRM with PRM.from_backbone")
        self.backbone: PreTrainedModel | PeftModel = backbone
        """the base model; while `train` trains LoRA adapters, a peft PeftModel around it"""
        self.tokenizer, self.cfg = tokenizer, cfg
        self.backbone_ref: BackboneRef | None = None
        """where `from_backbone` loaded the backbone from (None: built by hand)"""
        self._pristine: str | None = None  # weights_digest of the backbone as from_backbone left it
        self._logits_checked = False  # LogitsAt agreed with the LM's own logits once
        self.step_token_id = tokenizer.convert_tokens_to_ids(cfg.step_token)
        if cfg.lm_features and backbone.get_output_embeddings() is None:
            raise ValueError(f"lm_features needs a causal LM with an output head; {type(backbone).__name__} has none")
        hidden_size = backbone.config.get_text_config().hidden_size
        n_in = hidden_size + (N_LM_FEATURES if cfg.lm_features else 0)
        with torch.random.fork_rng(devices=[]):  # seeded heads, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.heads = torch.nn.ModuleList(Head(n_in, cfg.head_hidden) for _ in range(cfg.num_heads))

    @property
    def pad_id(self) -> int:
        for tid in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if tid is not None:
                return tid
        return 0  # any id: padded positions are masked and never read

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, steps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """input_ids, attention_mask (B, T) -> logits (E, B, T) at every position.

        `steps` (B, T) from `tokenization.step_index` is required with `cfg.lm_features`.
        """
        dtype = next(self.heads.parameters()).dtype  # heads stay float32 on a bf16 backbone
        if not self.cfg.lm_features:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
            hidden = hidden.to(dtype)
        else:
            if steps is None:
                raise ValueError("this PRM reads likelihood features (lm_features): pass steps=step_index(...)")
            hidden = self.backbone.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            feats = self.step_features(input_ids, attention_mask, steps.to(input_ids.device))  # (B, T, 3)
            hidden = torch.cat([hidden.to(dtype), feats.to(dtype)], -1)  # (B, T, H + 3)
        return torch.stack([head(hidden) for head in self.heads])  # (E, B, T)

    def step_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """f_k at every position of step k (zeros elsewhere), (B, T, 3), from a second pass of the
        causal LM over the text with the separators taken out: the LM sees exactly the policy's
        view of the solution (a separator, whatever its embedding, would be a token the policy
        never saw and would shift what it expects after it)."""
        keep = input_ids != self.step_token_id
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # plain tokens first, in order
        ids = input_ids.gather(1, order)
        attn = (attention_mask * keep).gather(1, order)
        plain_steps = torch.where(keep, steps, torch.full_like(steps, -1)).gather(1, order)
        if ids.numel() * self.backbone.get_output_embeddings().weight.shape[0] <= ONE_PASS_LOGITS:
            lm_logits: torch.Tensor | LogitsAt = self.backbone(input_ids=ids, attention_mask=attn).logits  # (B, T, V)
        else:  # a large vocabulary: never all (B, T, V) logits at once
            hidden = self.backbone.get_decoder()(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, T, H)
            lm_logits = LogitsAt(self.backbone, hidden)
            if not self._logits_checked:
                lm_logits.check(ids, attn)
                self._logits_checked = True
        per_step = lm_step_features(lm_logits, ids, plain_steps, exclude_id=self.step_token_id)  # (B, S, 3)
        if per_step.shape[1] == 0:
            return torch.zeros(*steps.shape, N_LM_FEATURES, device=steps.device, dtype=per_step.dtype)
        out = per_step.gather(1, steps.clamp(min=0).unsqueeze(-1).expand(-1, -1, N_LM_FEATURES))  # (B, T, 3)
        return torch.where((steps >= 0).unsqueeze(-1), out, torch.zeros_like(out))

    def inputs(self, batch: Sequence[TokenizedSteps]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model inputs of a batch on the model's device: input_ids, attention_mask, steps (B, T)
        and label_positions (B, S); `self(*prm.inputs(batch)[:3])` gives the logits."""
        device = next(self.parameters()).device
        ids, attn, pos = collate(batch, self.pad_id)
        return ids.to(device), attn.to(device), step_index(batch, ids.shape[1]).to(device), pos.to(device)

    def sq_dist_to_init(self) -> torch.Tensor:
        """sum_h ||theta_h - theta_h^0||^2, the L2-to-init term before its coefficient."""
        return cast(
            torch.Tensor, sum(cast(Head, head).sq_dist_to_init() for head in self.heads)
        )  # num_heads >= 1: a Tensor

    @property
    def bos_id(self) -> int | None:
        """The BOS id put first (None: cfg.add_bos is off or the tokenizer has none)."""
        return self.tokenizer.bos_token_id if self.cfg.add_bos else None

    def tokenize(self, prompt: str, steps: Sequence[str], max_len: int | None = None) -> TokenizedSteps:
        return tokenize_steps(
            self.tokenizer,
            prompt,
            steps,
            self.step_token_id,
            max_len or self.cfg.max_len,
            bos_id=self.bos_id,
            mode=self.cfg.step_tokenization,
        )

    # ----------------------------------------------------------------------- scoring

    @torch.no_grad()
    def score_batch(
        self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]], batch_size: int = 16
    ) -> list[StepScores]:
        """Score every kept step of every solution (eval mode, right-padded batches, no grad).

        Steps cut from the end for context get no score: head_mean, head_std and each per_head
        row cover only the kept steps, and n_truncated_steps says how many are missing (see
        `StepScores.head_mean_padded`). A solution whose first step alone exceeds max_len raises.
        """
        if len(prompts) != len(steps_list):
            raise ValueError(f"{len(prompts)} prompts but {len(steps_list)} step lists")
        was_training = self.training
        self.eval()
        out: list[StepScores] = []
        try:
            for i in range(0, len(prompts), batch_size):
                chunk = zip(prompts[i : i + batch_size], steps_list[i : i + batch_size])
                batch = [self.tokenize(p, s) for p, s in chunk]
                ids, attn, steps, _ = self.inputs(batch)
                probs = torch.sigmoid(self(ids, attn, steps).float()).cpu()  # (E, B, T)
                for b, x in enumerate(batch):
                    per_head = probs[:, b, x.label_positions]  # (E, kept steps)
                    out.append(
                        StepScores(
                            per_head.mean(0).tolist(),
                            per_head.std(0, correction=0).tolist(),
                            per_head.tolist(),
                            x.n_truncated_steps,
                        )
                    )
        finally:
            self.train(was_training)
        return out

    def score(self, problem_prompt: str, steps: Sequence[str]) -> list[float]:
        """head_mean per kept step of one solution (truncated steps are left out, see score_batch)."""
        return self.score_batch([problem_prompt], [steps])[0].head_mean

    # ----------------------------------------------------------------------- save / load

    @classmethod
    def from_backbone(cls, path_or_name: str | Path, cfg: PRMConfig, **backbone_kwargs: Any) -> PRM:
        """A fresh PRM on a policy / LM checkpoint: its base model, its tokenizer + the step token,
        and seeded heads. `backbone_kwargs` go to AutoModel.from_pretrained (e.g. dtype).

        The PRM remembers where its backbone came from (`backbone_ref`), so that while the
        backbone stays as loaded, `save_pretrained` writes a pointer to it instead of a copy.
        """
        tokenizer = AutoTokenizer.from_pretrained(path_or_name)
        backbone = _auto(cfg).from_pretrained(path_or_name, **backbone_kwargs)
        ref = BackboneRef(
            path=str(path_or_name),
            weights_sha256=weights_digest(backbone),
            tokenizer_sha256=tokenizer_digest(tokenizer),
            dtype=dtype_name(backbone),
        )
        add_step_token(tokenizer, backbone, cfg.step_token)
        prm = cls(backbone, tokenizer, copy.deepcopy(cfg))
        prm.backbone_ref = dataclasses.replace(ref, step_token_id=prm.step_token_id, vocab_size=len(tokenizer))
        prm._pristine = weights_digest(backbone)
        return prm

    def backbone_unchanged(self) -> bool:
        """Whether the backbone still holds exactly the weights `from_backbone` gave it (the
        loaded checkpoint + the step token's row), so a pointer to it describes it fully."""
        return self._pristine is not None and weights_digest(self.backbone) == self._pristine

    def save_pretrained(self, out_dir: str | Path) -> None:
        """Atomically write the PRM to out_dir: heads (prm_heads.safetensors), prmflow_prm.json and
        EITHER a pointer to the backbone (prm_backbone.json: its path as given, a sha256 of its
        weights and tokenizer) when the backbone is the unchanged checkpoint it was loaded from (a
        frozen backbone), OR the backbone (HF format) and tokenizer themselves (trained or merged
        LoRA backbones, or a PRM not built by `from_backbone`)."""
        ref = self.backbone_ref if self.backbone_unchanged() else None
        with atomic_path(out_dir) as tmp:
            if ref is None:
                cast(PreTrainedModel, self.backbone).save_pretrained(tmp)  # not a PeftModel: train merges LoRA
                self.tokenizer.save_pretrained(tmp)
            else:
                tmp.mkdir()
                (tmp / BACKBONE_REF_NAME).write_text(json.dumps(asdict(ref), indent=2, sort_keys=True) + "\n")
            save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}, tmp / HEADS_NAME)
            (tmp / CONFIG_NAME).write_text(json.dumps(asdict(self.cfg), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, backbone: str | Path | None = None, **backbone_kwargs: Any) -> PRM:
        """Load a PRM written by save_pretrained, with its backbone copy or by its pointer.

        A pointer (prm_backbone.json) names the backbone as `train.backbone` gave it; a relative
        path resolves against the repo the PRM dir sits in (`resolve_backbone`), so models/prm
        finds models/policy beside it from any working directory. `backbone` overrides where to
        find it. The backbone found there must hold the weights and tokenizer the PRM was trained
        on (sha256); otherwise a ValueError says so.
        """
        path = Path(path)
        raw = json.loads((path / CONFIG_NAME).read_text())
        raw.setdefault("add_bos", False)  # saved before BOS handling existed: trained without BOS
        cfg = PRMConfig(**raw)
        if (path / BACKBONE_REF_NAME).is_file():
            prm = cls._from_ref(path, cfg, backbone, **backbone_kwargs)
        elif backbone is not None:
            raise ValueError(
                f"{path} holds its own (trained) backbone; from_pretrained(backbone=...) is for a PRM "
                f"saved with a pointer to a frozen one"
            )
        else:
            prm = cls(_auto(cfg).from_pretrained(path, **backbone_kwargs), AutoTokenizer.from_pretrained(path), cfg)
        prm.heads.load_state_dict(load_file(path / HEADS_NAME))
        return prm

    @classmethod
    def _from_ref(cls, path: Path, cfg: PRMConfig, backbone: str | Path | None, **backbone_kwargs: Any) -> PRM:
        ref = BackboneRef(**json.loads((path / BACKBONE_REF_NAME).read_text()))
        src = str(backbone if backbone is not None else ref.path)
        local = resolve_backbone(src, path)
        where = (
            f"{src!r} (recorded in {path / BACKBONE_REF_NAME}; a relative path resolves against the first "
            f"ancestor of the PRM dir that holds it, else the working directory {Path.cwd()})"
        )
        if not local.exists() and (Path(src).is_absolute() or src.startswith(".")):
            raise FileNotFoundError(f"{path}: its backbone {where} does not exist")
        want_dtype = backbone_kwargs.pop("dtype", None)
        try:
            tokenizer = AutoTokenizer.from_pretrained(local if local.exists() else src)
            model = _auto(cfg).from_pretrained(
                local if local.exists() else src, dtype=getattr(torch, ref.dtype), **backbone_kwargs
            )
        except OSError as e:
            raise FileNotFoundError(f"{path}: its backbone {where} could not be loaded: {e}") from None
        for what, got, saved in (
            ("weights", weights_digest(model), ref.weights_sha256),
            ("tokenizer", tokenizer_digest(tokenizer), ref.tokenizer_sha256),
        ):
            if got != saved:
                raise ValueError(
                    f"{path}: the backbone {where} has changed since this PRM was trained: its {what} "
                    f"sha256 is {got[:16]}..., the PRM was trained on {saved[:16]}... The heads read "
                    f"that backbone's hidden states, so retrain the PRM on it, or pass "
                    f"from_pretrained(backbone=...) the original checkpoint"
                )
        with torch.random.fork_rng(devices=[]):  # resizing the embeddings draws rows: leave the caller's RNG alone
            add_step_token(tokenizer, model, cfg.step_token)
        prm = cls(model if want_dtype is None else model.to(want_dtype), tokenizer, cfg)
        if (prm.step_token_id, len(tokenizer)) != (ref.step_token_id, ref.vocab_size):
            raise ValueError(
                f"{path}: the step token got id {prm.step_token_id} in a vocabulary of {len(tokenizer)}, "
                f"but id {ref.step_token_id} of {ref.vocab_size} when the PRM was trained"
            )
        prm.backbone_ref, prm._pristine = ref, weights_digest(prm.backbone) if want_dtype is None else None
        return prm


def _auto(cfg: PRMConfig) -> type[AutoModelForCausalLM] | type[AutoModel]:
    """The Auto class of the backbone: the whole causal LM when the heads read its LM head."""
    return AutoModelForCausalLM if cfg.lm_features else AutoModel
