r"""A frozen-backbone PRM whose head inputs are computed once per solution.

With the backbone frozen (`active.freeze_backbone`), head h scores step k of solution b as

    s_{h,b,k} = sigmoid(head_h(x_{b,k})),    x_{b,k} = what `PRM.forward` feeds the heads at sep_k
                                                     ([hidden ; f_k] with lm_features)

and x does not change while the heads train. `CachedHeads` therefore runs the backbone once per
distinct tokenized solution, keeps x at the kept separators only, (S_b, n_in), and from then on
scores, evaluates and trains the heads on those rows alone. The active loop makes about
`rounds x (1 + grad_steps) + evaluations x eval rows` solution passes; cached, it makes one per
solution, so a run costs the featurization plus some small matrix products.

x is read by a forward pre-hook on the first head while `PRM.forward` runs, so it is exactly the
tensor the uncached PRM computes; scores and gradients agree with `PRM.score_batch` and
`prmflow.prm.accumulate_grads` up to float rounding (tested). A `FeatureCache` can be shared by
several `CachedHeads` (all seeds and strategies of a stage) as long as their backbones hold the
same weights, which it checks. Each solution is featurized alone (no padding), so a feature
does not depend on which other solutions it was batched with, nor on the order of the requests.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from prmflow.prm import PRM
from prmflow.prm.model import StepScores, head_data_mask, step_bce
from prmflow.prm.tokenization import TokenizedSteps
from prmflow.prm.train import Example


def backbone_digest(prm: PRM) -> str:
    """sha256 over what the head inputs depend on besides the tokens: the backbone's parameters
    (names, shapes, dtypes, bytes), the separator and whether the LM features are read. Not the
    heads' seed or number, so runs that differ only in their heads share one cache."""
    h = hashlib.sha256(repr((prm.cfg.step_token, prm.step_token_id, prm.cfg.lm_features)).encode())
    for name, p in prm.backbone.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """Head inputs (S, n_in) by tokenized solution, for one backbone (by `backbone_digest`)."""

    def __init__(self) -> None:
        self.digest: str | None = None
        self.rows: dict[bytes, torch.Tensor] = {}
        self.backbone_passes = 0
        """solutions featurized (each one backbone pass, two with lm_features)"""

    def bind(self, digest: str) -> None:
        if self.digest is None:
            self.digest = digest
        elif digest != self.digest:
            raise ValueError("this FeatureCache holds features of another backbone (weights or PRM config differ)")

    def __len__(self) -> int:
        return len(self.rows)


def _key(x: TokenizedSteps) -> bytes:
    return hashlib.blake2b(repr((x.input_ids, x.label_positions)).encode(), digest_size=16).digest()


class CachedHeads:
    """`prm` (backbone frozen) with cached head inputs: `score_batch` and `accumulate_grads` of
    the heads, as `PRM.score_batch` and `prmflow.prm.accumulate_grads` compute them."""

    def __init__(self, prm: PRM, cache: FeatureCache | None = None):
        trainable = [n for n, p in prm.backbone.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(
                f"CachedHeads needs a frozen backbone; {len(trainable)} backbone tensors are trainable "
                f"(e.g. {trainable[0]}); call prm.backbone.requires_grad_(False)"
            )
        self.prm = prm
        self.cache = cache if cache is not None else FeatureCache()
        self.cache.bind(backbone_digest(prm))

    @torch.no_grad()
    def _featurize(self, x: TokenizedSteps) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        hook = self.prm.heads[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
        was_training = self.prm.training
        self.prm.eval()
        try:
            ids, attn, steps, _ = self.prm.inputs([x])
            self.prm(ids, attn, steps)
        finally:
            hook.remove()
            self.prm.train(was_training)
        self.cache.backbone_passes += 1
        return captured[0][0, x.label_positions].float().cpu()  # (S, n_in)

    def features(self, batch: Sequence[TokenizedSteps]) -> list[torch.Tensor]:
        """x at the kept separators of each solution, (S_b, n_in); computed on first request."""
        out = []
        for x in batch:
            k = _key(x)
            if k not in self.cache.rows:
                self.cache.rows[k] = self._featurize(x)
            out.append(self.cache.rows[k])
        return out

    def _logits(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded heads' logits (E, B, S) and the positions (B, S): s, or -1 where padded."""
        S = max((f.shape[0] for f in feats), default=0)
        x = torch.zeros(len(feats), S, feats[0].shape[1] if feats else 0)
        pos = torch.full((len(feats), S), -1, dtype=torch.long)
        for b, f in enumerate(feats):
            x[b, : f.shape[0]] = f
            pos[b, : f.shape[0]] = torch.arange(f.shape[0])
        device = next(self.prm.heads.parameters()).device
        x = x.to(device=device, dtype=next(self.prm.heads.parameters()).dtype)
        return torch.stack([head(x) for head in self.prm.heads]), pos.to(device)

    @torch.no_grad()
    def score_batch(
        self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]], batch_size: int = 16
    ) -> list[StepScores]:
        """`PRM.score_batch` from cached features (`batch_size` only bounds one head pass)."""
        if len(prompts) != len(steps_list):
            raise ValueError(f"{len(prompts)} prompts but {len(steps_list)} step lists")
        out: list[StepScores] = []
        chunk = max(batch_size, 256)
        for i in range(0, len(prompts), chunk):
            batch = [self.prm.tokenize(p, s) for p, s in zip(prompts[i : i + chunk], steps_list[i : i + chunk])]
            feats = self.features(batch)
            probs = torch.sigmoid(self._logits(feats)[0].float()).cpu()  # (E, B, S)
            for b, x in enumerate(batch):
                per_head = probs[:, b, : len(x.label_positions)]
                out.append(
                    StepScores(
                        per_head.mean(0).tolist(),
                        per_head.std(0, correction=0).tolist(),
                        per_head.tolist(),
                        x.n_truncated_steps,
                    )
                )
        return out

    def accumulate_grads(self, group: Sequence[Example], batch_size: int) -> float:
        """`prmflow.prm.accumulate_grads(prm, group, batch_size)` on the heads (one process)."""
        cfg = self.prm.cfg
        masks = head_data_mask([e.id for e in group], cfg.num_heads, cfg.head_data_keep, cfg.seed)  # (E, G)
        n_pairs = max(1, sum(int(masks[:, j].sum()) * len(e.targets) for j, e in enumerate(group)))
        n_micro = math.ceil(len(group) / batch_size)
        total = 0.0
        for i in range(0, len(group), batch_size):
            mb = group[i : i + batch_size]
            logits, pos = self._logits(self.features([e.tokens for e in mb]))  # (E, B, S), (B, S)
            targets = torch.zeros(pos.shape)
            for b, e in enumerate(mb):
                targets[b, : len(e.targets)] = torch.tensor(e.targets)
            bce_sum, _ = step_bce(
                logits.float(), pos, targets.to(pos.device), masks[:, i : i + batch_size].to(pos.device)
            )
            loss = bce_sum / n_pairs
            if cfg.l2_to_init > 0:
                loss = loss + cfg.l2_to_init * self.prm.sq_dist_to_init() / n_micro
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} on the batch of rows {[e.id for e in mb]}")
            loss.backward()
            total += loss.item()
        return total
