/*
 * plot_scaling.c — the picture of bench/scaling.sh: wall time and peak resident
 * memory of `infl rank` against the training set size N, both on log axes, one line
 * per (method, model, M). PNG through libgd (as host/cli/render.c draws), text in its
 * built-in fonts.
 *
 *   plot_scaling scaling.csv scaling.png
 *
 * Input: the CSV scaling.sh writes (method,model,n,m,checkpoints,seconds,rss_mb).
 * Colour says M, the line style the model (solid: the first model in the file,
 * dashed: the second, dotted: others), the marker the method (disc: tracin, square:
 * others).
 */
#define _POSIX_C_SOURCE 200809L
#include <gd.h>
#include <gdfontmb.h>
#include <gdfonts.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXPTS 1024
#define MAXSER 64
#define PANEL_W 560
#define PANEL_H 440
#define MARGIN_L 70
#define MARGIN_R 20
#define MARGIN_T 50
#define MARGIN_B 60
#define LEGEND_H 120

typedef struct {
    char method[32], model[64];
    double n, m, seconds, rss;
} point;

typedef struct {
    char method[32], model[64];
    double m;
    int idx[64];  // points of the series, by increasing n
    int count;
} series;

static point pts[MAXPTS];
static int npts;
static series ser[MAXSER];
static int nser;
static char models[8][64];
static int nmodels;

static int model_index(const char *m) {
    for (int i = 0; i < nmodels; i++)
        if (!strcmp(models[i], m)) return i;
    if (nmodels < 8) snprintf(models[nmodels++], sizeof models[0], "%s", m);
    return nmodels - 1;
}

static int colour_of(gdImagePtr im, double m) {
    // M = 1, 10, 100, 1000, others: matplotlib's first colours
    static const int rgb[5][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189}};
    int i = m <= 1 ? 0 : m <= 10 ? 1 : m <= 100 ? 2 : m <= 1000 ? 3 : 4;
    return gdImageColorAllocate(im, rgb[i][0], rgb[i][1], rgb[i][2]);
}

// Log-axis range: whole decades around [lo, hi].
static void decades(double lo, double hi, double *a, double *b) {
    *a = floor(log10(lo));
    *b = ceil(log10(hi));
    if (*b <= *a) *b = *a + 1;
}

typedef struct {
    int x0, y0, x1, y1;  // plot area in px (y0 top)
    double lx0, lx1, ly0, ly1;  // log10 ranges
} panel;

static int px(const panel *p, double v) {
    return p->x0 + (int)lround((log10(v) - p->lx0) / (p->lx1 - p->lx0) * (p->x1 - p->x0));
}
static int py(const panel *p, double v) {
    return p->y1 - (int)lround((log10(v) - p->ly0) / (p->ly1 - p->ly0) * (p->y1 - p->y0));
}

static void label_value(char *buf, size_t size, double v, const char *unit) {
    if (v >= 1e6) snprintf(buf, size, "%gM%s", v / 1e6, unit);
    else if (v >= 1e3) snprintf(buf, size, "%gk%s", v / 1e3, unit);
    else snprintf(buf, size, "%g%s", v, unit);
}

static void draw_panel(gdImagePtr im, const panel *p, int which, const char *title, const char *ylabel,
                       const char *yunit) {
    int black = gdImageColorAllocate(im, 26, 26, 26), grid = gdImageColorAllocate(im, 225, 225, 225),
        soft = gdImageColorAllocate(im, 74, 74, 74);
    gdFontPtr f = gdFontGetSmall(), fb = gdFontGetMediumBold();
    // grid and ticks: 1, 2, 5 x 10^k on both axes
    for (int axis = 0; axis < 2; axis++) {
        double a = axis ? p->ly0 : p->lx0, b = axis ? p->ly1 : p->lx1;
        for (int e = (int)a; e <= (int)b; e++)
            for (int s = 0; s < 3; s++) {
                double v = (s == 0 ? 1 : s == 1 ? 2 : 5) * pow(10, e);
                if (log10(v) < a - 1e-9 || log10(v) > b + 1e-9) continue;
                char t[32];
                label_value(t, sizeof t, v, axis ? "" : "");
                if (axis == 0) {
                    int x = px(p, v);
                    gdImageLine(im, x, p->y0, x, p->y1, grid);
                    if (s == 0 || b - a <= 2) gdImageString(im, f, x - (int)strlen(t) * f->w / 2, p->y1 + 6,
                                                            (unsigned char *)t, soft);
                } else {
                    int y = py(p, v);
                    gdImageLine(im, p->x0, y, p->x1, y, grid);
                    if (s == 0 || b - a <= 2) gdImageString(im, f, p->x0 - 6 - (int)strlen(t) * f->w, y - f->h / 2,
                                                            (unsigned char *)t, soft);
                }
            }
    }
    gdImageRectangle(im, p->x0, p->y0, p->x1, p->y1, black);
    gdImageString(im, fb, (p->x0 + p->x1) / 2 - (int)strlen(title) * fb->w / 2, p->y0 - 30, (unsigned char *)title,
                  black);
    const char *xl = "N (training examples)";
    gdImageString(im, f, (p->x0 + p->x1) / 2 - (int)strlen(xl) * f->w / 2, p->y1 + 24, (unsigned char *)xl, black);
    char yl[64];
    snprintf(yl, sizeof yl, "%s (%s)", ylabel, yunit);
    gdImageStringUp(im, f, p->x0 - 58, (p->y0 + p->y1) / 2 + (int)strlen(yl) * f->w / 2, (unsigned char *)yl, black);

    // series
    gdImageSetThickness(im, 2);
    for (int s = 0; s < nser; s++) {
        const series *S = &ser[s];
        int col = colour_of(im, S->m), style = model_index(S->model);
        int prevx = 0, prevy = 0;
        for (int i = 0; i < S->count; i++) {
            const point *q = &pts[S->idx[i]];
            int x = px(p, q->n), y = py(p, which ? q->rss : q->seconds);
            if (i > 0) {
                if (style == 0) {
                    gdImageLine(im, prevx, prevy, x, y, col);
                } else {
                    // dashed (second model) or dotted (others), drawn as segments
                    double len = hypot(x - prevx, y - prevy), on = style == 1 ? 9 : 3, off = style == 1 ? 6 : 5;
                    for (double d = 0; d < len; d += on + off) {
                        double e = fmin(d + on, len);
                        gdImageLine(im, prevx + (int)lround((x - prevx) * d / len),
                                    prevy + (int)lround((y - prevy) * d / len),
                                    prevx + (int)lround((x - prevx) * e / len),
                                    prevy + (int)lround((y - prevy) * e / len), col);
                    }
                }
            }
            if (!strcmp(S->method, "tracin")) gdImageFilledEllipse(im, x, y, 8, 8, col);
            else gdImageFilledRectangle(im, x - 3, y - 3, x + 3, y + 3, col);
            prevx = x;
            prevy = y;
        }
    }
    gdImageSetThickness(im, 1);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: plot_scaling scaling.csv scaling.png\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "r");
    if (!in) {
        fprintf(stderr, "plot_scaling: cannot read %s\n", argv[1]);
        return 1;
    }
    char line[512];
    if (!fgets(line, sizeof line, in)) {
        fprintf(stderr, "plot_scaling: %s is empty\n", argv[1]);
        return 1;
    }
    while (fgets(line, sizeof line, in) && npts < MAXPTS) {
        point q;
        int ck;
        if (sscanf(line, "%31[^,],%63[^,],%lf,%lf,%d,%lf,%lf", q.method, q.model, &q.n, &q.m, &ck, &q.seconds,
                   &q.rss) != 7 || !(q.n > 0 && q.seconds > 0 && q.rss > 0)) {
            fprintf(stderr, "plot_scaling: %s: cannot read the line '%s'\n", argv[1], line);
            return 1;
        }
        pts[npts++] = q;
    }
    fclose(in);
    if (npts == 0) {
        fprintf(stderr, "plot_scaling: %s has no rows\n", argv[1]);
        return 1;
    }
    // series by (method, model, m), points by increasing n
    double nlo = INFINITY, nhi = 0, tlo = INFINITY, thi = 0, rlo = INFINITY, rhi = 0;
    for (int i = 0; i < npts; i++) {
        point *q = &pts[i];
        model_index(q->model);
        nlo = fmin(nlo, q->n), nhi = fmax(nhi, q->n);
        tlo = fmin(tlo, q->seconds), thi = fmax(thi, q->seconds);
        rlo = fmin(rlo, q->rss), rhi = fmax(rhi, q->rss);
        int s = 0;
        while (s < nser && !(strcmp(ser[s].method, q->method) == 0 && strcmp(ser[s].model, q->model) == 0 &&
                             ser[s].m == q->m))
            s++;
        if (s == nser) {
            if (nser == MAXSER) continue;
            memset(&ser[s], 0, sizeof ser[s]);
            memcpy(ser[s].method, q->method, sizeof ser[s].method);  // same sizes, NUL-terminated by sscanf
            memcpy(ser[s].model, q->model, sizeof ser[s].model);
            ser[s].m = q->m;
            nser++;
        }
        series *S = &ser[s];
        if (S->count < 64) {
            int j = S->count++;
            while (j > 0 && pts[S->idx[j - 1]].n > q->n) {
                S->idx[j] = S->idx[j - 1];
                j--;
            }
            S->idx[j] = i;
        }
    }
    int W = 2 * PANEL_W, H = PANEL_H + LEGEND_H;
    gdImagePtr im = gdImageCreateTrueColor(W, H);
    gdImageFilledRectangle(im, 0, 0, W - 1, H - 1, gdImageColorAllocate(im, 255, 255, 255));
    panel p[2];
    for (int k = 0; k < 2; k++) {
        p[k].x0 = k * PANEL_W + MARGIN_L;
        p[k].x1 = (k + 1) * PANEL_W - MARGIN_R;
        p[k].y0 = MARGIN_T;
        p[k].y1 = PANEL_H - MARGIN_B;
        decades(nlo, nhi, &p[k].lx0, &p[k].lx1);
        if (k == 0) decades(tlo, thi, &p[k].ly0, &p[k].ly1);
        else decades(rlo / 1.5, rhi * 1.5, &p[k].ly0, &p[k].ly1);
    }
    draw_panel(im, &p[0], 0, "infl rank: wall time", "time", "s");
    draw_panel(im, &p[1], 1, "infl rank: peak resident memory", "memory", "MB");

    // legend: colours (M), line styles (models), markers (methods)
    gdFontPtr f = gdFontGetSmall();
    int black = gdImageColorAllocate(im, 26, 26, 26), y = PANEL_H + 10, x = MARGIN_L;
    double ms[8];
    int nm = 0;
    for (int s = 0; s < nser; s++) {
        int seen = 0;
        for (int j = 0; j < nm; j++) seen |= ms[j] == ser[s].m;
        if (!seen && nm < 8) ms[nm++] = ser[s].m;
    }
    for (int i = 1; i < nm; i++)
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            double t = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = t;
        }
    for (int i = 0; i < nm; i++) {
        int col = colour_of(im, ms[i]);
        gdImageFilledRectangle(im, x, y + 3, x + 18, y + 9, col);
        char t[32];
        snprintf(t, sizeof t, "M = %g queries", ms[i]);
        gdImageString(im, f, x + 24, y, (unsigned char *)t, black);
        x += 150;
    }
    y += 22;
    x = MARGIN_L;
    for (int i = 0; i < nmodels && i < 3; i++) {
        int on = i == 0 ? 30 : i == 1 ? 9 : 3, off = i == 0 ? 0 : i == 1 ? 6 : 5;
        gdImageSetThickness(im, 2);
        for (int d = 0; d < 30; d += on + off) gdImageLine(im, x + d, y + 6, x + (d + on < 30 ? d + on : 30), y + 6, black);
        gdImageSetThickness(im, 1);
        char t[96];
        snprintf(t, sizeof t, "model %s", models[i]);
        gdImageString(im, f, x + 36, y, (unsigned char *)t, black);
        x += 260;
    }
    y += 22;
    x = MARGIN_L;
    gdImageFilledEllipse(im, x + 4, y + 6, 8, 8, black);
    gdImageString(im, f, x + 14, y, (unsigned char *)"tracin (2 checkpoints)", black);
    gdImageFilledRectangle(im, x + 221, y + 3, x + 227, y + 9, black);
    gdImageString(im, f, x + 234, y, (unsigned char *)"graddot (1 checkpoint)", black);
    y += 22;
    gdImageString(im, f, MARGIN_L, y,
                  (unsigned char *)"synthetic data (infl synth), D = 784, 10 classes; train split streamed from HDF5; "
                                   "time and ru_maxrss by GNU time",
                  black);

    int size = 0;
    void *png = gdImagePngPtrEx(im, &size, 6);
    gdImageDestroy(im);
    FILE *o = png ? fopen(argv[2], "wb") : NULL;
    if (!o || fwrite(png, 1, (size_t)size, o) != (size_t)size || fclose(o) != 0) {
        fprintf(stderr, "plot_scaling: cannot write %s\n", argv[2]);
        if (png) gdFree(png);
        return 1;
    }
    gdFree(png);
    printf("wrote %s\n", argv[2]);
    return 0;
}
