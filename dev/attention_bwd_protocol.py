#!/usr/bin/env python3
# dev/attention_bwd_protocol.py: a randomized model of the synchronization of the Hopper
# backward's stages 9 and 10 (common/attention.cuh, attention_backward_sm90_kernel: LAG and
# PINGPONG), run on the CPU because the protocol was written without a GPU at hand.
#
# Agents: the producer warp; each consumer warpgroup as two parts (warp 0, which holds thread 0,
# and warps 1..3; wgmma issue and commit are collective over both); async completions (TMA
# loads, wgmma commit groups, the TMA reduce-adds' read and write completions) fire at random
# points. mbarriers are modelled with their parity waits (a wait that would alias a phase two
# ahead is reported), named barriers with their thread counts. Checked on every step:
#   - a ring stage is reloaded only when no wgmma still reads it; S^T/dP^T and dV/dK read the
#     tile they expect;
#   - dQ(j) reads a dS^T buffer holding both consumers' halves of tile j, and no half is stored
#     into a buffer that a (non-throw-away) dQ still reads;
#   - a dQ staging buffer is written only when no reduce-add reads it (also the epilogue's);
#   - no deadlock, no barrier over-arrival.
# The model follows the kernel's order of operations by hand: change one, change the other.
#
#   python3 dev/attention_bwd_protocol.py                    # ~20 s, prints "violations: 0"
#   MUT=nofree|noread|noinit|nofull|nolast|early_empty python3 dev/attention_bwd_protocol.py
#       # each drops or moves one wait / arrival of the protocol: the model must report violations
#   PASYNC=0.05 ...                                          # make async completions rare (slow TMA)
import random, sys, os
M = os.environ.get("MUT", "")

class Viol(Exception): pass

class Sim:
    def __init__(s, n, PP, seed):
        s.rng = random.Random(seed); s.n = n; s.PP = PP
        s.mb = {}  # name -> [expected, pending, completed]
        s.nb = {}  # id -> [count, arrived, waiters(list of procs)]
        s.asyncs = []  # (fn)
        s.ring = [None] * 3           # tile loaded in ring stage
        s.ring_readers = [set() for _ in range(3)]  # in-flight wgmma (tile) reading the stage
        s.ds = [[None, None] for _ in range(3)]  # tile of each half in dS buffer
        s.ds_readers = [set() for _ in range(3)]  # in-flight dQ (tile, wg) reading
        s.stg = {}  # (wg, buf) -> set of in-flight reduce reads (tile)
        s.groups = {0: [], 1: []}  # per wg: list of in-flight groups (each a list of completion fns)
        s.cur_group = {0: [], 1: []}
        s.reduces = {0: [], 1: []}  # per wg: list of [read_done, done]
        s.coll = {}  # collective rendezvous
        s.dq_done = set()
    def mb_init(s, name, count): s.mb[name] = [count, count, 0]
    def mb_arrive(s, name, k=1):
        b = s.mb[name]; b[1] -= k
        if b[1] < 0: raise Viol("over-arrival " + name)
        if b[1] == 0: b[2] += 1; b[1] = b[0]
    def mb_ok(s, name, k):  # wait for completion number k (0-based) with parity semantics
        c = s.mb[name][2]
        ok = (c & 1) != (k & 1)
        if ok and c != k + 1: raise Viol("parity alias on %s: waiting for phase %d, completed %d" % (name, k, c))
        return ok
    def nb_arrive(s, bid, count, k):
        b = s.nb.setdefault(bid, [count, 0, []])
        if b[0] != count: raise Viol("named barrier %d count mismatch" % bid)
        b[1] += k
        if b[1] > count: raise Viol("named barrier %d over-arrival" % bid)
        if b[1] == count:
            for w in b[2]: w.blocked = None
            b[1] = 0; b[2] = []
            return True
        return False

class Proc:
    def __init__(s, name, gen): s.name = name; s.gen = gen; s.blocked = None; s.done = False

def run(n, PP, seed):
    S = Sim(n, PP, seed)
    for i in range(3):
        S.mb_init("full%d" % i, 2); S.mb_init("empty%d" % i, 256)
        S.mb_init("dsfull%d" % i, 256); S.mb_init("dsfree%d" % i, 256)
    procs = []
    def W(pred): return ("wait", pred)
    def named_sync(me, bid, count, k):
        if not S.nb_arrive(bid, count, k):
            S.nb[bid][2].append(me)
            me.blocked = "nb%d" % bid
            yield ("block",)
    def producer():
        for it in range(n):
            st = it % 3
            if it >= 3: yield W(lambda st=st, it=it: S.mb_ok("empty%d" % st, it // 3 - 1))
            if S.ring_readers[st]: raise Viol("producer overwrites ring %d read by %s" % (st, S.ring_readers[st]))
            S.ring[st] = ("loading", it)
            def land(st=st, it=it):
                S.ring[st] = it; S.mb_arrive("full%d" % st)
            S.asyncs.append(land)
            yield ("step",)
            S.mb_arrive("full%d" % st)  # the 32 lanes' lse2 / D arrival (one unit here)
            yield ("step",)
    def wgmma(wg, part, key, fn_issue, fn_done):
        # collective over the two parts of a warpgroup: the last one to arrive issues
        c = S.coll.setdefault((wg, key), 0) + 1
        S.coll[(wg, key)] = c
        if c == 2:
            fn_issue(); S.cur_group[wg].append(fn_done); del S.coll[(wg, key)]
        else:
            yield W(lambda: (wg, key) not in S.coll)
    def commit(wg, part, key):
        c = S.coll.setdefault((wg, "c" + key), 0) + 1
        S.coll[(wg, "c" + key)] = c
        if c == 2:
            g = S.cur_group[wg]; S.cur_group[wg] = []
            entry = {"done": False}
            S.groups[wg].append(entry)
            def complete(g=g, entry=entry):
                for f in g: f()
                entry["done"] = True
            S.asyncs.append(complete)
            del S.coll[(wg, "c" + key)]
        else:
            yield W(lambda: (wg, "c" + key) not in S.coll)
    def wait0(wg):
        return W(lambda: all(e["done"] for e in S.groups[wg]))
    def consumer(wg, part, me):
        th = 32 if part == 0 else 96
        def finish(j):
            b = j & 1
            if S.stg.get((wg, b)): raise Viol("staging (%d,%d) written while a reduce reads it (tile %d)" % (wg, b, j))
            yield ("step",)
            if part == 0 and M != "noread":  # thread 0: bulk_wait_read<0>
                yield W(lambda: all(r["read"] for r in S.reduces[wg]))
            yield from named_sync(me, 1 + wg, 128, th)
            if part == 0:
                r = {"read": False, "done": False}
                S.reduces[wg].append(r); S.stg.setdefault((wg, b), set()).add(j)
                def rd(r=r, b=b, j=j):
                    r["read"] = True; S.stg[(wg, b)].discard(j)
                    S.asyncs.append(lambda r=r: r.__setitem__("done", True))
                S.asyncs.append(rd)
        def issue_dq(j, garbage):
            buf = (j + 3) % 3
            def iss():
                if not garbage:
                    if S.ds[buf] != [j, j]: raise Viol("dQ(%d) wg%d reads dS buf %d holding %s" % (j, wg, buf, S.ds[buf]))
                S.ds_readers[buf].add((j, wg, garbage))
            def done(): S.ds_readers[buf].discard((j, wg, garbage))
            yield from wgmma(wg, part, "dq%d" % j, iss, done)
        if PP and wg == 1 and M != "noinit": S.nb_arrive(4, 256, th)
        for it in range(n):
            st = it % 3
            yield W(lambda st=st, it=it: S.mb_ok("full%d" % st, it // 3))
            if PP and it == 0: yield from named_sync(me, 4 + wg, 256, th)
            def iss(st=st, it=it):
                if S.ring[st] != it: raise Viol("S/dP(%d) reads ring %d holding %s" % (it, st, S.ring[st]))
                S.ring_readers[st].add(("sdp", it, wg))
            yield from wgmma(wg, part, "sdp%d" % it, iss, lambda st=st, it=it: S.ring_readers[st].discard(("sdp", it, wg)))
            yield from commit(wg, part, "sdp%d" % it)
            if PP: S.nb_arrive(5 - wg, 256, th)
            yield wait0(wg)
            if it >= (0 if M == "early_empty" else 1): S.mb_arrive("empty%d" % ((it - (0 if M == "early_empty" else 1)) % 3), th)
            if it >= 2: S.mb_arrive("dsfree%d" % ((it - 2) % 3), th)
            yield ("step",)
            if it >= 3 and M != "nofree": yield W(lambda it=it: S.mb_ok("dsfree%d" % (it % 3), it // 3 - 1))
            buf = it % 3
            for r in S.ds_readers[buf]:
                if not r[2]: raise Viol("dS(%d) wg%d stored into buf %d while dQ%s reads it" % (it, wg, buf, r))
            S.ds[buf][wg] = it  # this warpgroup's half of dS^T (both parts store theirs here)
            yield ("step",)
            if PP:
                S.mb_arrive("dsfull%d" % buf, th)
                if it >= 2: yield from finish(it - 2)
                yield from named_sync(me, 4 + wg, 256, th)
            def iss2(st=st, it=it):
                if S.ring[st] != it: raise Viol("dV/dK(%d) reads ring %d holding %s" % (it, st, S.ring[st]))
                S.ring_readers[st].add(("dkv", it, wg))
            yield from wgmma(wg, part, "dkv%d" % it, iss2, lambda st=st, it=it: S.ring_readers[st].discard(("dkv", it, wg)))
            yield from commit(wg, part, "dkv%d" % it)
            if not PP:
                S.mb_arrive("dsfull%d" % buf, th)
                if it >= 2: yield from finish(it - 2)
            if it >= 1 and M != "nofull": yield W(lambda it=it: S.mb_ok("dsfull%d" % ((it - 1) % 3), (it - 1) // 3))
            yield from issue_dq(it - 1, it == 0)
            yield from commit(wg, part, "dq%d" % (it - 1))
            if PP and wg == 0 and it == n - 1 and M != "nolast": S.nb_arrive(5, 256, th)
        yield wait0(wg)
        if n >= 2: yield from finish(n - 2)
        yield W(lambda: S.mb_ok("dsfull%d" % ((n - 1) % 3), (n - 1) // 3))
        yield from issue_dq(n - 1, False)
        yield from commit(wg, part, "dq%d" % (n - 1))
        yield wait0(wg)
        yield from finish(n - 1)
        if part == 0: yield W(lambda: all(r["done"] for r in S.reduces[wg]))
        yield from named_sync(me, 1 + wg, 128, th)
        if S.stg.get((wg, 0)) or S.stg.get((wg, 1)): raise Viol("epilogue overwrites staging of wg%d" % wg)
    procs.append(Proc("producer", producer()))
    for wg in range(2):
        for part in range(2):
            p = Proc("c%d.%d" % (wg, part), None)
            p.gen = consumer(wg, part, p)
            procs.append(p)
    pending = {p: None for p in procs}
    steps = 0
    while True:
        steps += 1
        if steps > 200000: raise Viol("too many steps")
        runnable = []
        for p in procs:
            if p.done or p.blocked: continue
            w = pending[p]
            if w is None or w[0] != "wait" or w[1](): runnable.append(p)
        choices = len(runnable) + len(S.asyncs)
        if choices == 0:
            if all(p.done for p in procs): return True
            raise Viol("deadlock: " + ", ".join("%s:%s" % (p.name, p.blocked or pending[p]) for p in procs if not p.done))
        pa = float(os.environ.get("PASYNC", "0"))
        if pa > 0 and runnable and S.asyncs:
            k = len(runnable) + S.rng.randrange(len(S.asyncs)) if S.rng.random() < pa else S.rng.randrange(len(runnable))
        else:
            k = S.rng.randrange(choices)
        if k < len(runnable):
            p = runnable[k]
            try:
                y = next(p.gen)
                if y[0] == "block": pending[p] = None
                else: pending[p] = y
            except StopIteration:
                p.done = True
        else:
            f = S.asyncs.pop(k - len(runnable)); f()

bad = 0
for PP in (False, True):
    for n in (1, 2, 3, 4, 5, 7, 12):
        for seed in range(int(os.environ.get("SEEDS", "300"))):
            try:
                run(n, PP, seed)
            except Viol as e:
                bad += 1
                if bad < 8: print("stage", 10 if PP else 9, "n", n, "seed", seed, ":", e)
print("violations:", bad)
sys.exit(1 if bad else 0)
