"""diffusers hooks that route a wrapped transformer's branches and blocks through our engine.

They are diffusers' own `ModelHook`s, registered on the transformer's submodules through its
`HookRegistry`: the transformer's code runs unchanged, and a hook decides per call whether the
module's original forward runs or a stored output stands in. With no runner installed (an
uncached evaluation) every hook calls the original forward with the same arguments, so the
wrapped model computes exactly what the bare one does.
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ...engine.model import reads_input, run_branch

BRANCH_HOOK = "l2c_bench_branch"
BLOCK_HOOK = "l2c_bench_block"


class BranchHook(ModelHook):
    """One module of one branch (block b, ATTENTION or MLP, part p): its output before any gate.

    A module returning a tuple (joint attention: image and text streams) stores each element as
    its own part, p, p+1, ...; the plan still decides for the whole branch.
    """

    def __init__(self, owner, block: int, branch: int, part: int, outputs: int = 1, zeros_when_dropped: bool = False):
        super().__init__()
        self.owner, self.block, self.branch, self.part = owner, block, branch, part
        self.outputs = outputs  # 1: a tensor; k > 1: a tuple of k tensors, parts part..part+k-1
        # a dropped branch is the scalar 0 (the block adds gate * 0); a module whose output the
        # block concatenates (Flux's single-stream blocks) needs a zero tensor of its shape
        self.zeros_when_dropped = zeros_when_dropped

    def new_forward(self, module, *args, **kwargs):
        runner = self.owner.runner
        forward = self.fn_ref.original_forward
        if runner is None:
            return forward(*args, **kwargs)
        if self.outputs > 1:
            return self._parts(runner, forward, args, kwargs)
        if kwargs:  # the branch function sees positional inputs only (a token rule slices the first)
            names = tuple(kwargs)
            values = tuple(kwargs.values())
            n = len(args)

            def fn(*xs):
                return forward(*xs[:n], **dict(zip(names, xs[n:], strict=True)))
            out = run_branch(runner, self.block, self.branch, fn, *args, *values, part=self.part)
        else:
            out = run_branch(runner, self.block, self.branch, forward, *args, part=self.part)
        if self.zeros_when_dropped and not isinstance(out, torch.Tensor):
            x = args[0] if args else next(iter(kwargs.values()))  # the module's input (N, T, D)
            width = module.out_features if isinstance(module, torch.nn.Linear) else x.shape[-1]
            return x.new_zeros(*x.shape[:-1], width)
        return out

    def _parts(self, runner, forward, args, kwargs):
        if reads_input(runner, self.block, self.branch):
            outs = forward(*args, **kwargs)
            return tuple(run_branch(runner, self.block, self.branch, lambda o=o: o, part=self.part + i)
                         for i, o in enumerate(outs))
        return tuple(run_branch(runner, self.block, self.branch, _not_called, part=self.part + i)
                     for i in range(self.outputs))


def _not_called():  # a reused part: the runner hands back its stored output without calling this
    raise RuntimeError("a reused branch part asked for its input")


class BlockHook(ModelHook):
    """One transformer block: records what a run-time probe reads, and runs a span of blocks as
    one unit when the runner asks for one (`runner.span`), as our own models do."""

    def __init__(self, owner, index: int):
        super().__init__()
        self.owner, self.index = owner, index

    def new_forward(self, module, *args, **kwargs):
        owner, forward = self.owner, self.fn_ref.original_forward
        span = getattr(owner.runner, "span", None)
        if span is None or owner.inside_span:
            return forward(*args, **kwargs)
        start, end = span
        if self.index == 0:
            owner.blocks_in = (args, kwargs)
        if self.index < start or self.index >= end:
            return forward(*args, **kwargs)
        if self.index > start:  # already run (or reused) as part of the span
            return owner.passthrough(args, kwargs)
        state = owner.state_of(args, kwargs)  # the span's input (N, T, D)
        blocks = owner.blocks

        def run(h):
            call_args, call_kwargs = owner.with_state(args, kwargs, h)
            owner.inside_span = True
            try:
                for index in range(start, end):
                    out = blocks[index](*call_args, **call_kwargs)
                    call_args, call_kwargs = owner.next_inputs(call_args, call_kwargs, out)
            finally:
                owner.inside_span = False
            return owner.state_of(call_args, call_kwargs), None

        out, _ = owner.runner.run_span(state, run, probe=lambda kind: owner.probe(kind, state))
        return owner.block_output(args, kwargs, out)


def register(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
