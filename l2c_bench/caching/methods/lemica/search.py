"""LeMiCa's offline schedule search: the lexicographic minimax path over the DAG of cache segments.

Nodes are the evaluations 0..N-1; an edge (i, j), i < j, means "evaluation i computes, i+1..j-1
reuse its cache, j computes", weighted by the error that segment alone causes in the final sample
(`calibration`). A schedule is a path from 0 to N-1 through `budget` nodes (the evaluations that
compute); LeMiCa picks the path whose edge errors, sorted in decreasing order, are smallest
lexicographically: the smallest worst segment, then the smallest second worst, and so on.

Solved exactly by dynamic programming over (node, nodes used): the decreasingly sorted vector
(leximax) order is preserved by adding the same edges to two paths (compare the multiplicity of
the largest value where they differ: a common edge changes neither), so the best path to j with
k nodes extends a best path to some i with k - 1 nodes."""

from __future__ import annotations


def leximax_key(errors) -> tuple[float, ...]:
    """The vector a path is ranked by: its edge errors, largest first (smaller is better)."""
    return tuple(sorted(errors, reverse=True))


def lexminimax_path(edges: dict[tuple[int, int], float], nfe: int, budget: int) -> tuple[int, ...]:
    """The evaluations that compute (0 and nfe - 1 among them, `budget` in all) along the
    lexicographic minimax path over `edges` {(i, j): error}; ties go to the path found first
    (the one with earlier computed evaluations). An edge (i, i + 1) costs 0 if not given."""
    if not 1 <= budget <= nfe or (nfe > 1 and budget < 2):
        raise ValueError(f"a schedule of {nfe} evaluations computes 2..{nfe} of them (the first and the last), "
                         f"not {budget}")
    if nfe == 1:
        return (0,)
    cost = {(i, i + 1): 0.0 for i in range(nfe - 1)} | dict(edges)
    # best[k][j]: (key, path) of the best path from 0 to j through k + 1 nodes
    best: list[dict[int, tuple[tuple[float, ...], tuple[int, ...], tuple[float, ...]]]] = [{0: ((), (0,), ())}]
    for _ in range(1, budget):
        layer: dict = {}
        for i, (_, path, errors) in sorted(best[-1].items()):
            for (a, j), e in sorted(cost.items()):
                if a != i:
                    continue
                candidate = (leximax_key(errors + (e,)), path + (j,), errors + (e,))
                if j not in layer or candidate[0] < layer[j][0]:
                    layer[j] = candidate
        best.append(layer)
    if nfe - 1 not in best[-1]:
        raise ValueError(f"no schedule reaches evaluation {nfe - 1} through {budget} computed ones with these "
                         "segments (a longer reuse than the edges allow)")
    return best[-1][nfe - 1][1]
