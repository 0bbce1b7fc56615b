/*
 * args.c — the long-option parser of the CLI (see args.h).
 */
#include "args.h"

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

static int set_value(const cli_spec *s, const cli_opt *o, const char *v) {
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case ARG_FLAG: *(int *)o->dst = 1; return 0;
    case ARG_STR: *(const char **)o->dst = v; return 0;
    case ARG_INT: {
        long x = strtol(v, &end, 10);
        if (errno || !*v || *end || x < -2147483647L || x > 2147483647L) break;
        *(int *)o->dst = (int)x;
        return 0;
    }
    case ARG_I64: {
        long long x = strtoll(v, &end, 10);
        if (errno || !*v || *end) break;
        *(int64_t *)o->dst = x;
        return 0;
    }
    case ARG_U64: {
        if (*v == '-') break;
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || !*v || *end) break;
        *(uint64_t *)o->dst = x;
        return 0;
    }
    case ARG_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || !*v || *end || !isfinite(x)) break;
        *(double *)o->dst = x;
        return 0;
    }
    }
    const char *what = o->kind == ARG_DOUBLE ? "a number" : o->kind == ARG_U64 ? "a whole number >= 0" : "a whole number";
    fprintf(stderr, "%s: --%s: expected %s, got '%s'\n", s->cmd, o->name, what, v);
    return 2;
}

int cli_parse(const cli_spec *s, int argc, char **argv, const char **pos, int maxpos, int *npos) {
    *npos = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*npos >= maxpos) {
                fprintf(stderr, "%s: unexpected argument '%s' (see %s --help)\n", s->cmd, a, s->cmd);
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
            fprintf(stderr, "%s: unknown option '%s' (see %s --help)\n", s->cmd, a, s->cmd);
            return 2;
        }
        if (o->kind == ARG_FLAG) {
            if (inline_val) {
                fprintf(stderr, "%s: --%s takes no value\n", s->cmd, o->name);
                return 2;
            }
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = inline_val;
        if (!v) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: --%s needs a value (%s)\n", s->cmd, o->name, o->metavar ? o->metavar : "");
                return 2;
            }
            v = argv[++i];
        }
        if (set_value(s, o, v)) return 2;
    }
    return 0;
}
