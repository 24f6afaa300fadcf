/* stacktable.h -- static stack tables: a forward pass over a code object's bytecode that
 * finds, for every call site, how many value-stack items lie below the callable and what
 * kind each must be.  Computed once per code object and cached on it (a code extra).
 *
 * The bytecode's meaning -- what each instruction pushes, where it jumps, which items
 * the eval loop trusts -- comes from ext/cpython/py311.h; this is the dataflow over it.
 */
#ifndef SAVEPOINT_FRAMES_STACKTABLE_H
#define SAVEPOINT_FRAMES_STACKTABLE_H

#include "../cpython/py311.h"
#include <stdint.h>
#include <string.h>

static Py_ssize_t sp_extra_index = -1;   /* the code-extra slot of the tables, set at init */

#define SP_TRACKED 64   /* stack positions whose kinds are tracked (one uint64 per kind) */

typedef struct {
    uint64_t bits[SP_NKINDS];   /* SP_K_* (py311.h): bit i = the item at depth i */
} sp_kinds;

/* A site is where a frame stands while it waits (SP_SITE_*, py311.h).  A frame in a
 * saved chain waits in a call (its callee is the next frame) or, driving a generator that
 * is the next frame, in FOR_ITER or SEND; a suspended generator's own frame stands on
 * YIELD_VALUE, or on RETURN_GENERATOR before it first runs. */
typedef struct {
    int kind;        /* SP_SITE_* */
    int call;        /* code unit of the instruction */
    int resume;      /* prev_instr of a frame waiting here */
    int below;       /* value-stack items a frame waiting here holds: below the callable
                        (and its NULL/self slot) of a call; with the iterator for FOR_ITER,
                        with the receiver for SEND; without the yielded value */
    int ex;          /* 1 for CALL_FUNCTION_EX: the stack holds [NULL, func] at `below` */
    int argc;        /* CALL's oparg: arguments after the callable (self not counted) */
    int start;       /* first unit of the instruction with its EXTENDED_ARG prefixes */
    int target;      /* where FOR_ITER (exhausted) and SEND (returned) jump, or -1 */
    sp_kinds kinds;  /* kinds of those items */
} sp_site;

typedef struct {
    int nunits;
    int nsites;
    int32_t *site_at;     /* per code unit: the site a frame there is in, or -1 */
    sp_site *sites;
    const char *error;    /* why the code could not be analysed, or NULL */
} sp_table;

static void
sp_table_free(void *ptr)
{
    sp_table *t = (sp_table *)ptr;
    if (t != NULL) {
        PyMem_RawFree(t->site_at);
        PyMem_RawFree(t->sites);
        PyMem_RawFree(t);
    }
}

static inline void
sp_kinds_set(sp_kinds *k, int kind, int pos)
{
    if (pos >= 0 && pos < SP_TRACKED) {
        k->bits[kind] |= (uint64_t)1 << pos;
    }
}

static inline void
sp_kinds_truncate(sp_kinds *k, int depth)
{
    uint64_t mask = depth >= SP_TRACKED ? ~(uint64_t)0
                  : depth <= 0 ? 0 : (((uint64_t)1 << depth) - 1);
    for (int i = 0; i < SP_NKINDS; i++) {
        k->bits[i] &= mask;
    }
}

static inline int
sp_kind_at(const sp_kinds *k, int kind, int pos)
{
    return pos < SP_TRACKED && ((k->bits[kind] >> pos) & 1);
}

/* The kinds after one instruction: before-depth d, after-depth d2. */
static void
sp_transfer(int op, int arg, int jump, int d, int d2, sp_kinds *k)
{
    int pushes = sp_op_pushes(op, arg, jump);
    int copy = sp_op_copies(op, arg), swap = sp_op_swaps(op, arg);
    int copied[SP_NKINDS];
    if (copy) {
        for (int i = 0; i < SP_NKINDS; i++) {
            copied[i] = sp_kind_at(k, i, d - copy);
        }
    }
    sp_kinds_truncate(k, d2 - pushes);
    sp_mark marks[2];
    int nmarks = sp_op_marks(op, arg, jump, marks);
    for (int m = 0; m < nmarks; m++) {
        sp_kinds_set(k, marks[m].kind, d2 - marks[m].from_top);
    }
    if (copy) {
        for (int i = 0; i < SP_NKINDS; i++) {
            if (copied[i]) {
                sp_kinds_set(k, i, d2 - 1);
            }
        }
    }
    if (swap) {
        int a = d - 1, b = d - swap;
        for (int i = 0; i < SP_NKINDS; i++) {
            int ka = sp_kind_at(k, i, a), kb = sp_kind_at(k, i, b);
            if (a < SP_TRACKED) k->bits[i] &= ~((uint64_t)1 << a);
            if (b >= 0 && b < SP_TRACKED) k->bits[i] &= ~((uint64_t)1 << b);
            if (kb) sp_kinds_set(k, i, a);
            if (ka) sp_kinds_set(k, i, b);
        }
    }
}

typedef struct {
    int n;
    uint8_t *op;        /* de-specialized opcode at each instruction start, 0xFF elsewhere */
    int *arg;           /* full oparg including EXTENDED_ARG prefixes */
    int *handler;       /* exception-table entry covering each unit, or -1 */
    int *depth;         /* stack depth before each instruction, -1 = not reached */
    sp_kinds *kinds;
    int *work;
    char *queued;
    int nwork;
    sp_handler *entries;  /* the exception table */
    int stacksize;
} sp_pass;

/* Record the state flowing into `target`; returns -1 on an inconsistency. */
static int
sp_flow(sp_pass *p, int target, int depth, const sp_kinds *k)
{
    if (target < 0 || target >= p->n || p->op[target] == 0xFF ||
            depth < 0 || depth > p->stacksize) {
        return -1;
    }
    if (p->depth[target] < 0) {
        p->depth[target] = depth;
        p->kinds[target] = *k;
    }
    else if (p->depth[target] != depth) {
        return -1;
    }
    else {
        /* States must agree at merge points; where kinds differ, keep only what all
         * paths agree on, and revisit (the kinds only shrink, so this terminates). */
        int changed = 0;
        for (int i = 0; i < SP_NKINDS; i++) {
            uint64_t merged = p->kinds[target].bits[i] & k->bits[i];
            if (merged != p->kinds[target].bits[i]) {
                p->kinds[target].bits[i] = merged;
                changed = 1;
            }
        }
        if (!changed) {
            return 0;
        }
    }
    if (!p->queued[target]) {
        p->queued[target] = 1;
        p->work[p->nwork++] = target;
    }
    return 0;
}

static const char *
sp_analyse_pass(PyCodeObject *co, sp_pass *p)
{
    int n = p->n;
    int ext = 0, op, arg;
    for (int i = 0; i < n; i += sp_instr_units(op)) {
        ext = sp_read_instr(co, i, ext, &op, &arg);
        p->op[i] = (uint8_t)op;
        p->arg[i] = arg;
    }

    const unsigned char *t, *tend;
    sp_code_handlers(co, &t, &tend);
    int nentries = 0;
    while (t < tend) {
        sp_handler *h = &p->entries[nentries];
        if (!(t = sp_read_handler(t, tend, h))) {
            return "malformed exception table";
        }
        if (h->end > n || h->target >= n) {
            return "exception table entry out of range";
        }
        for (int u = h->start; u < h->end; u++) {
            p->handler[u] = nentries;
        }
        nentries++;
    }

    sp_kinds empty;
    memset(&empty, 0, sizeof(empty));
    if (sp_flow(p, 0, 0, &empty) < 0) {
        return "empty code";
    }
    while (p->nwork > 0) {
        int i = p->work[--p->nwork];
        p->queued[i] = 0;
        int op = p->op[i], arg = p->arg[i], d = p->depth[i];
        int next = i + sp_instr_units(op);
        sp_kinds k = p->kinds[i];

        int eff, jeff;
        if (sp_stack_effect(op, arg, 0, &eff) < 0 || sp_stack_effect(op, arg, 1, &jeff) < 0) {
            return "unknown opcode";
        }
        int target;
        if (sp_op_jump_target(op, arg, next, &target)) {
            sp_kinds kj = k;
            sp_transfer(op, arg, 1, d, d + jeff, &kj);
            if (sp_flow(p, target, d + jeff, &kj) < 0) {
                return "inconsistent stack depth at a jump target";
            }
        }
        sp_kinds kf = k;
        sp_transfer(op, arg, 0, d, d + eff, &kf);
        if (p->handler[i] >= 0) {
            const sp_handler *h = &p->entries[p->handler[i]];
            int edepth = h->depth, lasti = h->lasti;
            sp_kinds ke = sp_op_raises_after(op) ? kf : k;
            sp_kinds_truncate(&ke, edepth);
            if (lasti) {
                sp_kinds_set(&ke, SP_K_LASTI, edepth);
            }
            sp_kinds_set(&ke, SP_K_EXC, edepth + lasti);
            if (sp_flow(p, h->target, edepth + lasti + 1, &ke) < 0) {
                return "inconsistent stack depth at an exception handler";
            }
        }
        if (sp_op_falls_through(op) && next < n) {
            if (sp_flow(p, next, d + eff, &kf) < 0) {
                return "inconsistent stack depth";
            }
        }
    }
    return NULL;
}

/* The site of the instruction at unit i, reached with p->depth[i] items. */
static void
sp_site_fill(sp_site *s, int kind, const sp_pass *p, int i)
{
    int op = p->op[i], arg = p->arg[i], d = p->depth[i];
    s->kind = kind;
    s->call = i;
    s->resume = i;
    s->target = -1;
    s->start = i;
    while (s->start > 0 && p->op[s->start - 1] == EXTENDED_ARG) {
        s->start--;
    }
    switch (kind) {
    case SP_SITE_CALL:
        s->ex = sp_op_is_call_ex(op);
        s->argc = arg;
        s->below = sp_call_below(op, arg, d);
        s->resume = sp_call_resume(op, i);
        break;
    case SP_SITE_FOR:          /* [.., iterator] */
        s->below = d;
        sp_op_jump_target(op, arg, i + sp_instr_units(op), &s->target);
        break;
    case SP_SITE_SEND:         /* [.., receiver, sent value]: the value is taken first */
        s->below = d - 1;
        sp_op_jump_target(op, arg, i + sp_instr_units(op), &s->target);
        break;
    case SP_SITE_YIELD:        /* [.., yielded value]: popped when the generator stops */
        s->below = d - 1;
        break;
    default:                   /* SP_SITE_START: nothing on the stack yet */
        s->below = d;
        break;
    }
    s->kinds = p->kinds[i];
    sp_kinds_truncate(&s->kinds, s->below);
}

static sp_table *
sp_analyse(PyCodeObject *co)
{
    sp_table *table = (sp_table *)PyMem_RawCalloc(1, sizeof(sp_table));
    if (table == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    int n = sp_code_nunits(co);
    table->nunits = n;
    sp_pass p;
    memset(&p, 0, sizeof(p));
    p.n = n;
    p.stacksize = sp_code_stacksize(co);
    int nentries = sp_code_max_handlers(co);
    p.op = PyMem_RawMalloc(n);
    p.arg = PyMem_RawMalloc(sizeof(int) * n);
    p.handler = PyMem_RawMalloc(sizeof(int) * n);
    p.depth = PyMem_RawMalloc(sizeof(int) * n);
    p.kinds = PyMem_RawMalloc(sizeof(sp_kinds) * n);
    p.work = PyMem_RawMalloc(sizeof(int) * n);
    p.queued = PyMem_RawCalloc(n, 1);
    p.entries = PyMem_RawMalloc(sizeof(sp_handler) * nentries);
    table->site_at = PyMem_RawMalloc(sizeof(int32_t) * n);
    if (!p.op || !p.arg || !p.handler || !p.depth || !p.kinds || !p.work || !p.queued ||
            !p.entries || !table->site_at) {
        PyErr_NoMemory();
        goto fail;
    }
    memset(p.op, 0xFF, n);
    for (int i = 0; i < n; i++) {
        p.handler[i] = -1;
        p.depth[i] = -1;
        table->site_at[i] = -1;
    }
    table->error = sp_analyse_pass(co, &p);
    if (table->error == NULL) {
        int nsites = 0;
        for (int i = 0; i < n; i++) {
            if (p.depth[i] >= 0 && sp_op_site_kind(p.op[i]) >= 0) {
                nsites++;
            }
        }
        table->sites = PyMem_RawCalloc(nsites ? nsites : 1, sizeof(sp_site));
        if (table->sites == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            int kind = p.depth[i] >= 0 ? sp_op_site_kind(p.op[i]) : -1;
            if (kind < 0) {
                continue;
            }
            sp_site *s = &table->sites[table->nsites];
            sp_site_fill(s, kind, &p, i);
            if (s->below < 0 || s->resume >= n || (s->kind == SP_SITE_FOR && s->below < 1) ||
                    (s->kind == SP_SITE_SEND && s->below < 1) ||
                    ((s->kind == SP_SITE_FOR || s->kind == SP_SITE_SEND) &&
                     (s->target <= i || s->target >= n || p.op[s->target] == 0xFF))) {
                memset(s, 0, sizeof(*s));
                continue;
            }
            table->site_at[i] = table->nsites;
            table->site_at[s->resume] = table->nsites;
            int alias = kind == SP_SITE_CALL ? sp_call_alias(p.op, p.op[i], i) : -1;
            if (alias >= 0) {
                table->site_at[alias] = table->nsites;
            }
            table->nsites++;
        }
    }
    goto done;
fail:
    sp_table_free(table);
    table = NULL;
done:
    PyMem_RawFree(p.op); PyMem_RawFree(p.arg); PyMem_RawFree(p.handler);
    PyMem_RawFree(p.depth); PyMem_RawFree(p.kinds); PyMem_RawFree(p.work);
    PyMem_RawFree(p.queued); PyMem_RawFree(p.entries);
    return table;
}

/* The cached table of a code object (a borrowed pointer owned by the code object). */
static sp_table *
sp_table_get(PyCodeObject *co)
{
    void *extra = NULL;
    if (sp_code_get_extra(co, sp_extra_index, &extra) < 0) {
        return NULL;
    }
    if (extra != NULL) {
        return (sp_table *)extra;
    }
    sp_table *table = sp_analyse(co);
    if (table == NULL) {
        return NULL;
    }
    if (sp_code_set_extra(co, sp_extra_index, table) < 0) {
        sp_table_free(table);
        return NULL;
    }
    return table;
}

static inline const sp_site *
sp_site_at(const sp_table *t, int lasti)
{
    if (t->error != NULL || lasti < 0 || lasti >= t->nunits || t->site_at[lasti] < 0) {
        return NULL;
    }
    return &t->sites[t->site_at[lasti]];
}

/* The site of `kind` a waiting frame stands on at `lasti` (its resume unit), or NULL. */
static inline const sp_site *
sp_site_waiting_at(const sp_table *t, int lasti, int kind)
{
    const sp_site *site = sp_site_at(t, lasti);
    return site != NULL && site->kind == kind && site->resume == lasti ? site : NULL;
}

#endif /* SAVEPOINT_FRAMES_STACKTABLE_H */
