/*
 * args.c — the long-option parser of the CLI (see args.h).
 */
#include "args.h"
#include "cliutil.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void cli_help(const cli_spec *s, FILE *out) {
    fprintf(out, "usage: %s %s\n\n", s->cmd, s->synopsis);
    if (s->about) fprintf(out, "%s\n\n", s->about);
    fprintf(out, "options:\n");
    for (int i = 0; i < s->nopts; i++) {
        const cli_opt *o = &s->opts[i];
        char left[64];
        if (o->shortc)
            snprintf(left, sizeof left, "-%c, --%s%s%s", o->shortc, o->name, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        fprintf(out, "  %-28s %s\n", left, o->help);
    }
    fprintf(out, "  %-28s %s\n", "-h, --help", "show this help");
}

int cli_in_range(const char *range, int whole, double x, char *what, size_t size) {
    const char *noun = whole ? "a whole number" : "a number";
    if (!range) {
        if (what) snprintf(what, size, "%s", noun);
        return 1;
    }
    char *end = NULL;
    if (range[0] == '>') {  // ">=a" or ">a"
        int eq = range[1] == '=';
        double a = strtod(range + 1 + eq, &end);
        if (end == range + 1 + eq || *end) return -1;
        if (what) snprintf(what, size, "%s %s %g", noun, eq ? ">=" : ">", a);
        return eq ? x >= a : x > a;
    }
    if (range[0] != '[' && range[0] != '(') return -1;  // "[a,b]", "(a,b]", "[a,b)", "(a,b)"
    double a = strtod(range + 1, &end);
    if (end == range + 1 || *end != ',') return -1;
    const char *bp = end + 1;
    double b = strtod(bp, &end);
    if (end == bp || (*end != ']' && *end != ')') || end[1]) return -1;
    int lo_in = range[0] == '[', hi_in = *end == ']';
    if (what) snprintf(what, size, "%s in %c%g, %g%c", noun, range[0], a, b, *end);
    return (lo_in ? x >= a : x > a) && (hi_in ? x <= b : x < b);
}

static int set_value(const cli_spec *s, const cli_opt *o, const char *v) {
    char *end = NULL;
    errno = 0;
    double num = 0;  // the value, for the range check
    switch (o->kind) {
    case ARG_FLAG: *(int *)o->dst = 1; return 0;
    case ARG_STR: *(const char **)o->dst = v; return 0;
    case ARG_INT: {
        long x = strtol(v, &end, 10);
        if (errno || !*v || *end || x < -2147483647L || x > 2147483647L) goto bad;
        *(int *)o->dst = (int)x;
        num = (double)x;
        break;
    }
    case ARG_I64: {
        long long x = strtoll(v, &end, 10);
        if (errno || !*v || *end) goto bad;
        *(int64_t *)o->dst = x;
        num = (double)x;
        break;
    }
    case ARG_U64: {
        if (*v == '-') goto bad;
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || !*v || *end) goto bad;
        *(uint64_t *)o->dst = x;
        num = (double)x;
        break;
    }
    case ARG_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || !*v || *end || !isfinite(x)) goto bad;
        *(double *)o->dst = x;
        num = x;
        break;
    }
    }
    if (cli_in_range(o->range, o->kind != ARG_DOUBLE, num, NULL, 0) == 1) return 0;
bad:;
    char what[96];
    const char *range = o->range ? o->range : o->kind == ARG_U64 ? ">=0" : NULL;
    if (cli_in_range(range, o->kind != ARG_DOUBLE, 0, what, sizeof what) < 0)
        snprintf(what, sizeof what, "a value (bad range '%s' in the option table)", range);
    if (cli_root()) fprintf(stderr, "%s: --%s: expected %s, got '%s' (see %s --help)\n", s->cmd, o->name, what, v, s->cmd);
    return 2;
}

int cli_parse(const cli_spec *s, int argc, char **argv, const char **pos, int maxpos, int *npos) {
    *npos = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*npos >= maxpos) {
                if (cli_root()) fprintf(stderr, "%s: unexpected argument '%s' (see %s --help)\n", s->cmd, a, s->cmd);
                return 2;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli_help(s, stdout);
            return 1;
        }
        const cli_opt *o = NULL;
        const char *inline_val = NULL;
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nl = eq ? (size_t)(eq - name) : strlen(name);
            for (int j = 0; j < s->nopts; j++)
                if (strlen(s->opts[j].name) == nl && strncmp(s->opts[j].name, name, nl) == 0) o = &s->opts[j];
            if (eq) inline_val = eq + 1;
        } else if (a[2] == '\0') {
            for (int j = 0; j < s->nopts; j++)
                if (s->opts[j].shortc == a[1]) o = &s->opts[j];
        }
        if (!o) {
            if (cli_root()) fprintf(stderr, "%s: unknown option '%s' (see %s --help)\n", s->cmd, a, s->cmd);
            return 2;
        }
        if (o->kind == ARG_FLAG) {
            if (inline_val) {
                if (cli_root()) fprintf(stderr, "%s: --%s takes no value\n", s->cmd, o->name);
                return 2;
            }
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = inline_val;
        if (!v) {
            if (i + 1 >= argc) {
                if (cli_root()) fprintf(stderr, "%s: --%s needs a value (%s)\n", s->cmd, o->name, o->metavar ? o->metavar : "");
                return 2;
            }
            v = argv[++i];
        }
        if (set_value(s, o, v)) return 2;
    }
    return 0;
}
