"""EDU-PRM: "More Bang for the Buck: Process Reward Modeling with Entropy-Driven Uncertainty"
(arXiv 2503.22233).

The policy's per-token entropy H_t (entropy.py) marks anchors, the tokens where it hesitated.
Anchors cut a solution into steps (partition.py), and they are where EDU sampling branches: a
tree grown from one trunk (tree.py), and N candidates from such trees pruned by a PRM (sampling.py).

Nothing is re-exported: the policy backends import `prmflow.edu.entropy` alone, and the tree
modules import `prmflow.policy`, so importing one module never pulls in the others.
"""
