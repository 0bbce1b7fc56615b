/*
 * render.c — the contact sheet and the scatter plot (see render.h). Each writer first
 * computes a layout (pure arithmetic, shared with the tests through *_place), then
 * draws on a libgd true-colour image, encodes it to PNG in memory and writes it under
 * a temporary name that is renamed into place.
 */
#define _POSIX_C_SOURCE 200809L
#include "render.h"

#include <errno.h>
#include <gd.h>
#include <gdfontl.h>
#include <gdfontmb.h>
#include <gdfonts.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

// ---- colours and text ----

#define RGB(hex) gdTrueColor(((hex) >> 16) & 0xFF, ((hex) >> 8) & 0xFF, (hex)&0xFF)

#define C_BACKGROUND 0xFFFFFF
#define C_TEXT 0x1A1A1A       // titles, first caption lines, axis labels
#define C_TEXT_SOFT 0x4A4A4A  // second caption lines, subtitles, tick labels
#define C_RULE 0xC8C8C8       // group separators
#define C_HEADER_RULE 0x8A8A8A
#define C_AXIS 0x333333
#define C_GRID 0xEBEBEB
#define C_DIAGONAL 0x8C8C8C
#define C_POINT_R 31  // points: matplotlib's blue, partly transparent so that
#define C_POINT_G 119 // overlaps show as darker
#define C_POINT_B 180
#define C_POINT_ALPHA 40  // 0 opaque .. 127 transparent
#define POINT_DIAMETER 7

// Copies s into buf, cut to at most `maxchars` characters (ending in ".." when cut).
// Returns the number of characters kept.
static int fit_text(char *buf, size_t bufsize, const char *s, int maxchars) {
    if (!s || maxchars <= 0 || bufsize < 1) {
        if (bufsize) buf[0] = 0;
        return 0;
    }
    size_t len = strlen(s);
    size_t keep = len;
    if (keep > (size_t)maxchars) keep = (size_t)maxchars;
    if (keep > bufsize - 1) keep = bufsize - 1;
    memcpy(buf, s, keep);
    buf[keep] = 0;
    if (keep < len && keep >= 3) buf[keep - 1] = buf[keep - 2] = '.';
    return (int)keep;
}

// Draws s (cut to maxchars) horizontally centred on cx with its top at y.
static void text_centred(gdImagePtr im, gdFontPtr f, int cx, int y, const char *s, int maxchars, int colour) {
    char buf[512];
    int n = fit_text(buf, sizeof buf, s, maxchars);
    if (n > 0) gdImageString(im, f, cx - n * f->w / 2, y, (unsigned char *)buf, colour);
}

static int textlen(const char *s) { return s ? (int)strlen(s) : 0; }
static int nonempty(const char *s) { return s && *s; }

// ---- writing ----

// Encodes im as PNG into tmp (created here). The caller removes tmp on failure.
static infl_status png_write(infl_ctx *ctx, gdImagePtr im, const char *path, const char *tmp) {
    int size = 0;
    void *buf = gdImagePngPtrEx(im, &size, 6);
    if (!buf || size <= 0) {
        if (buf) gdFree(buf);
        return infl_seterr(ctx, INFL_E_IO, "%s: libgd could not encode the PNG", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        gdFree(buf);
        return infl_seterr(ctx, INFL_E_IO, "%s: cannot open %s for writing: %s", path, tmp, strerror(e));
    }
    size_t wrote = fwrite(buf, 1, (size_t)size, f);
    int e = errno;
    gdFree(buf);
    if (wrote != (size_t)size) {
        fclose(f);
        return infl_seterr(ctx, INFL_E_IO, "%s: cannot write %s: %s", path, tmp, strerror(e));
    }
    if (fclose(f) != 0) {
        e = errno;
        return infl_seterr(ctx, INFL_E_IO, "%s: cannot write %s: %s", path, tmp, strerror(e));
    }
    return INFL_OK;
}

// Checks that path may be written (before any drawing) and gives a temporary name
// beside it in *tmp (malloc'd; free it).
static infl_status png_begin(infl_ctx *ctx, const char *path, int force, char **tmp) {
    *tmp = NULL;
    RETURN_IF(ctx, !path || !*path, INFL_E_ARG, "no output file given for the picture");
    size_t tmpsize = strlen(path) + 32;
    *tmp = infl_malloc(ctx, tmpsize, "a temporary file name");
    if (!*tmp) return INFL_E_NOMEM;
    (*tmp)[0] = 0;
    return infl_out_begin(ctx, path, force, *tmp, tmpsize);
}

// Writes the drawn image under tmp and renames it to path; removes tmp on failure.
static infl_status png_finish(infl_ctx *ctx, gdImagePtr im, const char *path, const char *tmp) {
    infl_status rc = png_write(ctx, im, path, tmp);
    if (rc == INFL_OK) return infl_out_commit(ctx, tmp, path);
    infl_out_abort(tmp);
    return rc;
}

// ---- contact sheet: layout ----

#define CAPTION_GAP 5    // between a frame's bottom and the first caption line
#define TITLE_GAP 12     // between the title and what follows
#define HEADER_GAP 9     // between a header's rule and the images
#define MAX_TITLE_PX 960 // a longer title is cut rather than widening the sheet

typedef struct {
    int width, height;
    int cell_w;     // width of every column's cell (image with frame, captions)
    int img_h;      // height of the image cell of every row, frames included
    int cap_lines;  // caption lines under each tile (0..2)
    int cap_chars;  // characters a caption line may hold
    int title_y;    // top of the title text (-1: none)
    int header_y;   // top of the header text (-1: none)
    int grid_y;     // top of the first row
    int row_pitch;  // from one row's top to the next's
    int *col_x;     // (cols,) left edge of each column's cell
    int *boundary;  // (cols,) 1 where a new header group starts at column c (c > 0)
} sheet_layout;

static void sheet_layout_free(sheet_layout *l) {
    free(l->col_x);
    free(l->boundary);
    l->col_x = l->boundary = NULL;
}

static int tile_scale(const infl_tile *t) {
    if (!t->pixels) return 0;
    return t->w >= INFL_SHEET_MIN_PX ? 1 : (INFL_SHEET_MIN_PX + t->w - 1) / t->w;
}

static int same_header(const char *a, const char *b) {
    if (!nonempty(a) || !nonempty(b)) return !nonempty(a) && !nonempty(b);
    return strcmp(a, b) == 0;
}

static infl_status sheet_validate(infl_ctx *ctx, const infl_tile *tiles, int rows, int cols) {
    RETURN_IF(ctx, rows < 1 || cols < 1, INFL_E_ARG, "contact sheet: %d rows x %d columns; need at least 1 x 1",
              rows, cols);
    RETURN_IF(ctx, (int64_t)rows * cols > 100000, INFL_E_ARG, "contact sheet: %d x %d tiles is too many", rows,
              cols);
    RETURN_IF(ctx, !tiles, INFL_E_ARG, "contact sheet: no tiles given");
    for (int i = 0; i < rows * cols; i++) {
        const infl_tile *t = &tiles[i];
        int r = i / cols, c = i % cols;
        RETURN_IF(ctx, t->frame > 0xFFFFFFu && t->frame != INFL_TILE_NO_FRAME, INFL_E_ARG,
                  "contact sheet: tile (%d, %d): frame colour 0x%08X is neither 0xRRGGBB nor INFL_TILE_NO_FRAME", r,
                  c, (unsigned)t->frame);
        if (!t->pixels) continue;
        RETURN_IF(ctx, t->h < 1 || t->w < 1, INFL_E_ARG, "contact sheet: tile (%d, %d) is %d x %d px; need >= 1 x 1",
                  r, c, t->h, t->w);
        RETURN_IF(ctx, t->h > INFL_PNG_MAX_SIDE || t->w > INFL_PNG_MAX_SIDE, INFL_E_ARG,
                  "contact sheet: tile (%d, %d) is %d x %d px; at most %d a side", r, c, t->h, t->w,
                  INFL_PNG_MAX_SIDE);
        RETURN_IF(ctx, t->c != 1 && t->c != 3, INFL_E_ARG,
                  "contact sheet: tile (%d, %d) has %d channels; expected 1 (grey) or 3 (RGB)", r, c, t->c);
    }
    return INFL_OK;
}

// Computes the layout (after sheet_validate). Frees its arrays itself on failure.
static infl_status sheet_layout_compute(infl_ctx *ctx, const infl_tile *tiles, int rows, int cols, const char *title,
                                        const char *const *col_headers, sheet_layout *l) {
    memset(l, 0, sizeof *l);
    gdFontPtr fcap = gdFontGetSmall(), fhead = gdFontGetMediumBold(), ftitle = gdFontGetLarge();
    const int F = INFL_SHEET_FRAME;

    // the cell: the widest scaled image and the longest caption (cut at CAPTION_MAX)
    int max_iw = 0, max_ih = 0, max_chars = 0;
    for (int i = 0; i < rows * cols; i++) {
        const infl_tile *t = &tiles[i];
        int s = tile_scale(t);
        if (s) {
            if (s * t->w > max_iw) max_iw = s * t->w;
            if (s * t->h > max_ih) max_ih = s * t->h;
        }
        int n1 = textlen(t->line1), n2 = textlen(t->line2);
        if (n1 > max_chars) max_chars = n1;
        if (n2 > max_chars) max_chars = n2;
        int lines = t->line2 ? 2 : t->line1 ? 1 : 0;
        if (lines > l->cap_lines) l->cap_lines = lines;
    }
    if (max_iw < INFL_SHEET_MIN_PX) max_iw = INFL_SHEET_MIN_PX;
    if (max_ih < 1) max_ih = INFL_SHEET_MIN_PX;  // every tile empty: still a square cell
    l->cap_chars = max_chars < INFL_SHEET_CAPTION_MAX ? max_chars : INFL_SHEET_CAPTION_MAX;
    l->cell_w = max_iw + 2 * F;
    if (l->cap_chars * fcap->w + 4 > l->cell_w) l->cell_w = l->cap_chars * fcap->w + 4;
    // a caption line holds what the cell's width allows (at least CAPTION_MAX when wide)
    l->cap_chars = (l->cell_w - 4) / fcap->w;
    l->img_h = max_ih + 2 * F;

    // columns, with wider gaps where the header changes
    l->col_x = calloc((size_t)cols, sizeof(int));
    l->boundary = calloc((size_t)cols, sizeof(int));
    if (!l->col_x || !l->boundary) {
        sheet_layout_free(l);
        return infl_seterr(ctx, INFL_E_NOMEM, "contact sheet: out of memory for the layout of %d columns", cols);
    }
    int any_header = 0;
    for (int c = 0; c < cols && col_headers; c++) any_header |= nonempty(col_headers[c]);
    int64_t x = INFL_SHEET_MARGIN;
    for (int c = 0; c < cols; c++) {
        if (c > 0) {
            l->boundary[c] = col_headers && !same_header(col_headers[c - 1], col_headers[c]);
            x += l->cell_w + (l->boundary[c] ? INFL_SHEET_GROUP_GAP : INFL_SHEET_GAP);
        }
        if (x > INFL_PNG_MAX_SIDE) break;
        l->col_x[c] = (int)x;
    }
    int64_t width = x + l->cell_w + INFL_SHEET_MARGIN;
    int title_px = textlen(title) * ftitle->w;
    if (title_px > MAX_TITLE_PX) title_px = MAX_TITLE_PX;
    if (title_px + 2 * INFL_SHEET_MARGIN > width) width = title_px + 2 * INFL_SHEET_MARGIN;

    // rows: title band, header band, then rows of (image cell, captions)
    int y = INFL_SHEET_MARGIN;
    l->title_y = l->header_y = -1;
    if (nonempty(title)) {
        l->title_y = y;
        y += ftitle->h + TITLE_GAP;
    }
    if (any_header) {
        l->header_y = y;
        y += fhead->h + 3 + HEADER_GAP;
    }
    l->grid_y = y;
    int cap_h = l->cap_lines ? CAPTION_GAP + l->cap_lines * fcap->h : 0;
    l->row_pitch = l->img_h + cap_h + INFL_SHEET_ROW_GAP;
    int64_t height = (int64_t)y + (int64_t)rows * l->row_pitch - INFL_SHEET_ROW_GAP + INFL_SHEET_MARGIN;
    if (width > INFL_PNG_MAX_SIDE || height > INFL_PNG_MAX_SIDE) {
        sheet_layout_free(l);
        return infl_seterr(ctx, INFL_E_ARG,
                           "contact sheet: %d x %d tiles of %d x %d px make a picture over %d px a side", rows, cols,
                           l->cell_w, l->img_h, INFL_PNG_MAX_SIDE);
    }
    l->width = (int)width;
    l->height = (int)height;
    return INFL_OK;
}

// The scaled image of tile (r, c) and its caption band.
static void sheet_tile_rects(const sheet_layout *l, const infl_tile *t, int r, int c, infl_rect *image,
                             infl_rect *caption) {
    int s = tile_scale(t);
    int iw = s * t->w, ih = s * t->h;
    int top = l->grid_y + r * l->row_pitch;
    int inner_h = l->img_h - 2 * INFL_SHEET_FRAME;
    if (image) *image = (infl_rect){l->col_x[c] + (l->cell_w - iw) / 2, top + INFL_SHEET_FRAME + (inner_h - ih) / 2,
                                    iw, ih};
    if (caption) *caption = (infl_rect){l->col_x[c], top + l->img_h + CAPTION_GAP, l->cell_w,
                                        l->cap_lines * gdFontGetSmall()->h};
}

infl_status infl_sheet_place(infl_ctx *ctx, const infl_tile *tiles, int rows, int cols, const char *title,
                             const char *const *col_headers, int r, int c, int *width, int *height,
                             infl_rect *image, infl_rect *caption, int *scale) {
    FORWARD_IF_ERROR(sheet_validate(ctx, tiles, rows, cols));
    RETURN_IF(ctx, r < 0 || r >= rows || c < 0 || c >= cols, INFL_E_ARG,
              "contact sheet: tile (%d, %d) is outside %d x %d", r, c, rows, cols);
    sheet_layout l;
    FORWARD_IF_ERROR(sheet_layout_compute(ctx, tiles, rows, cols, title, col_headers, &l));
    const infl_tile *t = &tiles[r * cols + c];
    sheet_tile_rects(&l, t, r, c, image, caption);
    if (width) *width = l.width;
    if (height) *height = l.height;
    if (scale) *scale = tile_scale(t);
    sheet_layout_free(&l);
    return INFL_OK;
}

// ---- contact sheet: drawing ----

static int channel(float v) {
    if (!(v > 0.0f)) return 0;  // also NaN
    if (v >= 1.0f) return 255;
    return (int)lrintf(v * 255.0f);
}

// Draws tile t's pixels, each as an s x s block, with its top-left at (x0, y0).
static void draw_pixels(gdImagePtr im, const infl_tile *t, int s, int x0, int y0) {
    for (int i = 0; i < t->h; i++)
        for (int j = 0; j < t->w; j++) {
            const float *p = t->pixels + ((size_t)i * t->w + j) * t->c;
            int r = channel(p[0]), g = t->c == 3 ? channel(p[1]) : r, b = t->c == 3 ? channel(p[2]) : r;
            int x = x0 + j * s, y = y0 + i * s;
            gdImageFilledRectangle(im, x, y, x + s - 1, y + s - 1, gdTrueColor(r, g, b));
        }
}

static void sheet_draw(gdImagePtr im, const sheet_layout *l, const infl_tile *tiles, int rows, int cols,
                       const char *title, const char *const *col_headers) {
    gdFontPtr fcap = gdFontGetSmall(), fhead = gdFontGetMediumBold(), ftitle = gdFontGetLarge();
    const int F = INFL_SHEET_FRAME;
    gdImageFilledRectangle(im, 0, 0, l->width - 1, l->height - 1, RGB(C_BACKGROUND));

    if (l->title_y >= 0) {
        char buf[512];
        int maxc = (l->width - 2 * INFL_SHEET_MARGIN) / ftitle->w;
        if (fit_text(buf, sizeof buf, title, maxc) > 0)
            gdImageString(im, ftitle, INFL_SHEET_MARGIN, l->title_y, (unsigned char *)buf, RGB(C_TEXT));
    }

    // headers: one label per run of equal headers, centred over the run, ruled under
    int grid_bottom = l->grid_y + rows * l->row_pitch - INFL_SHEET_ROW_GAP - 1;
    for (int c0 = 0; c0 < cols;) {
        int c1 = c0;
        while (c1 + 1 < cols && !l->boundary[c1 + 1]) c1++;
        if (l->header_y >= 0 && nonempty(col_headers[c0])) {
            int x0 = l->col_x[c0], x1 = l->col_x[c1] + l->cell_w - 1;
            text_centred(im, fhead, (x0 + x1 + 1) / 2, l->header_y, col_headers[c0], (x1 - x0 + 1) / fhead->w,
                         RGB(C_TEXT));
            int ry = l->header_y + fhead->h + 2;
            gdImageLine(im, x0 + 2, ry, x1 - 2, ry, RGB(C_HEADER_RULE));
        }
        if (c0 > 0) {  // a thin rule in the middle of the gap before this group
            int rx = l->col_x[c0] - INFL_SHEET_GROUP_GAP / 2;
            int top = l->header_y >= 0 ? l->header_y : l->grid_y;
            gdImageLine(im, rx, top, rx, grid_bottom, RGB(C_RULE));
        }
        c0 = c1 + 1;
    }

    // tiles: frame, pixels, captions
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const infl_tile *t = &tiles[r * cols + c];
            infl_rect im_r, cap_r;
            sheet_tile_rects(l, t, r, c, &im_r, &cap_r);
            if (t->pixels) {
                if (t->frame != INFL_TILE_NO_FRAME)
                    gdImageFilledRectangle(im, im_r.x - F, im_r.y - F, im_r.x + im_r.w + F - 1,
                                           im_r.y + im_r.h + F - 1, RGB(t->frame));
                draw_pixels(im, t, tile_scale(t), im_r.x, im_r.y);
            }
            int cx = cap_r.x + cap_r.w / 2;
            if (t->line1) text_centred(im, fcap, cx, cap_r.y, t->line1, l->cap_chars, RGB(C_TEXT));
            if (t->line2) text_centred(im, fcap, cx, cap_r.y + fcap->h, t->line2, l->cap_chars, RGB(C_TEXT_SOFT));
        }
}

infl_status infl_png_contact_sheet(infl_ctx *ctx, const char *path, int force, const infl_tile *tiles, int rows,
                                   int cols, const char *title, const char *const *col_headers) {
    FORWARD_IF_ERROR(sheet_validate(ctx, tiles, rows, cols));
    sheet_layout l;
    FORWARD_IF_ERROR(sheet_layout_compute(ctx, tiles, rows, cols, title, col_headers, &l));
    gdImagePtr im = NULL;
    char *tmp = NULL;
    infl_status rc;
    CHECK(png_begin(ctx, path, force, &tmp));
    im = gdImageCreateTrueColor(l.width, l.height);
    GOTO_IF(ctx, !im, INFL_E_NOMEM, "%s: libgd cannot allocate a %d x %d picture", path, l.width, l.height);
    sheet_draw(im, &l, tiles, rows, cols, title, col_headers);
    rc = png_finish(ctx, im, path, tmp);
done:
    if (im) gdImageDestroy(im);
    free(tmp);
    sheet_layout_free(&l);
    return rc;
}

// ---- scatter: layout ----

#define SC_MARGIN 14
#define SC_TICK 5
#define SC_RIGHT 30   // room for the last x tick label
#define SC_PAD 0.05   // data range padding on each side, as a fraction of the span
#define SC_MAX_TICKS 32

typedef struct {
    infl_scatter_layout l;
    int nx, ny;                          // tick counts
    double xt[SC_MAX_TICKS], yt[SC_MAX_TICKS];
    char xs[SC_MAX_TICKS][24], ys[SC_MAX_TICKS][24];
} scatter_geom;

// A round step (1, 2 or 5 times a power of ten) giving about `target` intervals.
static double nice_step(double span, int target) {
    double raw = span / target;
    double p = pow(10.0, floor(log10(raw)));
    double f = raw / p;
    double m = f < 1.5 ? 1 : f < 3.0 ? 2 : f < 7.0 ? 5 : 10;
    return m * p;
}

// "2.5e-06" -> "2.5e-6", "1e+05" -> "1e5", zero -> "0".
static void compact_exponent(char *s, double v) {
    if (v == 0) {
        strcpy(s, "0");
        return;
    }
    char *e = strchr(s, 'e');
    if (!e) return;
    char *src = e + 1, *dst = e + 1;
    if (*src == '+') src++;
    else if (*src == '-') *dst++ = *src++;
    while (*src == '0' && src[1]) src++;
    memmove(dst, src, strlen(src) + 1);
}

// The ticks at multiples of step in [lo, hi] and their labels, with the fewest digits
// that tell them apart exactly (fixed notation for moderate values, else exponent).
static int make_ticks(double lo, double hi, double step, double *t, char (*s)[24]) {
    int n = 0;
    for (double k = ceil(lo / step - 1e-9); k <= floor(hi / step + 1e-9) && n < SC_MAX_TICKS; k++) {
        double v = k * step;
        t[n++] = fabs(v) < step * 1e-9 ? 0.0 : v;  // no "-0" or "1e-17"
    }
    double maxabs = 0;
    for (int i = 0; i < n; i++) maxabs = fmax(maxabs, fabs(t[i]));
    int fixed = maxabs < 1e5 && step >= 1e-3;
    for (int p = 0; p <= 8; p++) {
        int ok = 1;
        for (int i = 0; i < n; i++) {
            snprintf(s[i], 24, fixed ? "%.*f" : "%.*e", p, t[i]);
            if (!fixed) compact_exponent(s[i], t[i]);
            if (fabs(strtod(s[i], NULL) - t[i]) > step * 1e-6) ok = 0;
        }
        if (ok) break;
    }
    return n;
}

static infl_status scatter_geom_compute(infl_ctx *ctx, const infl_series *sr, int ns, int diagonal,
                                        const char *xlabel, const char *ylabel, const char *title,
                                        const char *subtitle, scatter_geom *g) {
    RETURN_IF(ctx, ns < 1 || !sr, INFL_E_ARG, "plot: no series given (%d)", ns);
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int finite = 0, n = 0;
    for (int s = 0; s < ns; s++) {
        const double *x = sr[s].x, *y = sr[s].y;
        RETURN_IF(ctx, sr[s].n < 1 || !x || !y, INFL_E_ARG, "scatter plot: no points given (n = %d)", sr[s].n);
        RETURN_IF(ctx, sr[s].colour > 0xFFFFFFu, INFL_E_ARG, "plot: series %d: colour 0x%X is not 0xRRGGBB", s,
                  sr[s].colour);
        n += sr[s].n;
        for (int i = 0; i < sr[s].n; i++) {
            if (!isfinite(x[i]) || !isfinite(y[i])) continue;
            finite++;
            xmin = fmin(xmin, x[i]), xmax = fmax(xmax, x[i]);
            ymin = fmin(ymin, y[i]), ymax = fmax(ymax, y[i]);
        }
    }
    RETURN_IF(ctx, finite == 0, INFL_E_ARG, "scatter plot: none of the %d points has finite coordinates", n);
    if (diagonal) {
        xmin = ymin = fmin(xmin, ymin);
        xmax = ymax = fmax(xmax, ymax);
    }
    double lo[2] = {xmin, ymin}, hi[2] = {xmax, ymax};
    for (int a = 0; a < 2; a++) {
        double span = hi[a] - lo[a];
        RETURN_IF(ctx, !isfinite(span), INFL_E_ARG, "scatter plot: values too large to plot (%g to %g)", lo[a],
                  hi[a]);
        double pad = span > 0 ? span * SC_PAD : lo[a] != 0 ? fabs(lo[a]) * 0.1 : 1.0;
        lo[a] -= pad, hi[a] += pad;
        RETURN_IF(ctx, !isfinite(hi[a] - lo[a]), INFL_E_ARG, "scatter plot: values too large to plot");
    }
    infl_scatter_layout *l = &g->l;
    l->xlo = lo[0], l->xhi = hi[0], l->ylo = lo[1], l->yhi = hi[1];
    l->xstep = nice_step(l->xhi - l->xlo, 6);
    l->ystep = nice_step(l->yhi - l->ylo, 6);
    g->nx = make_ticks(l->xlo, l->xhi, l->xstep, g->xt, g->xs);
    g->ny = make_ticks(l->ylo, l->yhi, l->ystep, g->yt, g->ys);

    gdFontPtr fsmall = gdFontGetSmall(), fmb = gdFontGetMediumBold(), flarge = gdFontGetLarge();
    int ylab_chars = 0;
    for (int i = 0; i < g->ny; i++)
        if ((int)strlen(g->ys[i]) > ylab_chars) ylab_chars = (int)strlen(g->ys[i]);
    int top = SC_MARGIN + 6;
    if (nonempty(title)) top += flarge->h + 6;
    if (nonempty(subtitle)) top += fsmall->h + 6;
    l->py0 = top + 6;
    l->py1 = INFL_SCATTER_H - 1 - (SC_MARGIN + (nonempty(xlabel) ? fmb->h + 8 : 0) + fsmall->h + 4 + SC_TICK);
    l->px0 = SC_MARGIN + (nonempty(ylabel) ? fmb->h + 10 : 0) + ylab_chars * fsmall->w + 4 + SC_TICK;
    l->px1 = INFL_SCATTER_W - 1 - SC_RIGHT;
    return INFL_OK;
}

infl_status infl_scatter_place(infl_ctx *ctx, const double *x, const double *y, int n, const char *xlabel,
                               const char *ylabel, const char *title, const char *subtitle, int diagonal,
                               infl_scatter_layout *out) {
    scatter_geom g;
    infl_series one = {.x = x, .y = y, .n = n, .points = 1};
    FORWARD_IF_ERROR(scatter_geom_compute(ctx, &one, 1, diagonal, xlabel, ylabel, title, subtitle, &g));
    *out = g.l;
    return INFL_OK;
}

// ---- scatter: drawing ----

// Draws s centred on cx, moved (and cut) as needed to stay within the picture's margins.
static void text_centred_clamped(gdImagePtr im, gdFontPtr f, int cx, int y, const char *s, int colour) {
    int maxc = (INFL_SCATTER_W - 2 * SC_MARGIN) / f->w;
    int half = (textlen(s) < maxc ? textlen(s) : maxc) * f->w / 2;
    if (cx - half < SC_MARGIN) cx = SC_MARGIN + half;
    if (cx + half > INFL_SCATTER_W - SC_MARGIN) cx = INFL_SCATTER_W - SC_MARGIN - half;
    text_centred(im, f, cx, y, s, maxc, colour);
}

static void scatter_draw(gdImagePtr im, const scatter_geom *g, const infl_series *sr, int ns, const char *xlabel,
                         const char *ylabel, const char *title, const char *subtitle, int diagonal) {
    const infl_scatter_layout *l = &g->l;
    gdFontPtr fsmall = gdFontGetSmall(), fmb = gdFontGetMediumBold(), flarge = gdFontGetLarge();
    gdImageFilledRectangle(im, 0, 0, INFL_SCATTER_W - 1, INFL_SCATTER_H - 1, RGB(C_BACKGROUND));
    int pcx = (l->px0 + l->px1) / 2, pcy = (l->py0 + l->py1) / 2;

    // title and subtitle, centred over the plot area
    int ty = SC_MARGIN;
    if (nonempty(title)) {
        text_centred_clamped(im, flarge, pcx, ty, title, RGB(C_TEXT));
        ty += flarge->h + 6;
    }
    if (nonempty(subtitle)) text_centred_clamped(im, fsmall, pcx, ty, subtitle, RGB(C_TEXT_SOFT));

    // grid, ticks and tick labels
    for (int i = 0; i < g->nx; i++) {
        int px = infl_scatter_px(l, g->xt[i]);
        gdImageLine(im, px, l->py0 + 1, px, l->py1 - 1, RGB(C_GRID));
        gdImageLine(im, px, l->py1, px, l->py1 + SC_TICK, RGB(C_AXIS));
        text_centred(im, fsmall, px, l->py1 + SC_TICK + 3, g->xs[i], 23, RGB(C_TEXT_SOFT));
    }
    for (int i = 0; i < g->ny; i++) {
        int py = infl_scatter_py(l, g->yt[i]);
        gdImageLine(im, l->px0 + 1, py, l->px1 - 1, py, RGB(C_GRID));
        gdImageLine(im, l->px0 - SC_TICK, py, l->px0, py, RGB(C_AXIS));
        int w = (int)strlen(g->ys[i]) * fsmall->w;
        gdImageString(im, fsmall, l->px0 - SC_TICK - 4 - w, py - fsmall->h / 2, (unsigned char *)g->ys[i],
                      RGB(C_TEXT_SOFT));
    }

    // axis labels
    if (nonempty(xlabel))
        text_centred(im, fmb, pcx, INFL_SCATTER_H - SC_MARGIN - fmb->h, xlabel, (l->px1 - l->px0) / fmb->w,
                     RGB(C_TEXT));
    if (nonempty(ylabel)) {
        char buf[512];
        int nc = fit_text(buf, sizeof buf, ylabel, (l->py1 - l->py0) / fmb->w);
        gdImageStringUp(im, fmb, SC_MARGIN, pcy + nc * fmb->w / 2, (unsigned char *)buf, RGB(C_TEXT));
    }

    // the diagonal and the points, clipped to the plot area
    gdImageSetClip(im, l->px0 + 1, l->py0 + 1, l->px1 - 1, l->py1 - 1);
    if (diagonal) {
        double a = fmax(l->xlo, l->ylo), b = fmin(l->xhi, l->yhi);
        if (a < b) {
            gdImageSetAntiAliased(im, RGB(C_DIAGONAL));
            gdImageLine(im, infl_scatter_px(l, a), infl_scatter_py(l, a), infl_scatter_px(l, b),
                        infl_scatter_py(l, b), gdAntiAliased);
        }
    }
    gdImageAlphaBlending(im, 1);
    for (int s = 0; s < ns; s++) {
        const double *x = sr[s].x, *y = sr[s].y;
        uint32_t c = sr[s].colour;
        if (sr[s].points) {  // a scatter: partly transparent, so that overlaps show darker
            int pc = c ? gdTrueColorAlpha(c >> 16, c >> 8 & 0xFF, c & 0xFF, C_POINT_ALPHA)
                       : gdTrueColorAlpha(C_POINT_R, C_POINT_G, C_POINT_B, C_POINT_ALPHA);
            for (int i = 0; i < sr[s].n; i++) {
                if (!isfinite(x[i]) || !isfinite(y[i])) continue;
                gdImageFilledEllipse(im, infl_scatter_px(l, x[i]), infl_scatter_py(l, y[i]), POINT_DIAMETER,
                                     POINT_DIAMETER, pc);
            }
            continue;
        }
        // a line through the finite points in their order, a marker on each
        gdImageSetThickness(im, 2);
        for (int i = 1; i < sr[s].n; i++) {
            if (!isfinite(x[i - 1]) || !isfinite(y[i - 1]) || !isfinite(x[i]) || !isfinite(y[i])) continue;
            gdImageLine(im, infl_scatter_px(l, x[i - 1]), infl_scatter_py(l, y[i - 1]), infl_scatter_px(l, x[i]),
                        infl_scatter_py(l, y[i]), RGB(c));
        }
        gdImageSetThickness(im, 1);
        for (int i = 0; i < sr[s].n; i++)
            if (isfinite(x[i]) && isfinite(y[i]))
                gdImageFilledEllipse(im, infl_scatter_px(l, x[i]), infl_scatter_py(l, y[i]), POINT_DIAMETER,
                                     POINT_DIAMETER, RGB(c));
    }
    gdImageSetClip(im, 0, 0, INFL_SCATTER_W - 1, INFL_SCATTER_H - 1);

    // the legend: the labelled series, in the corner of the plot area with the fewest points under it
    gdFontPtr fleg = gdFontGetSmall();
    int nlab = 0, wmax = 0;
    for (int s = 0; s < ns; s++)
        if (nonempty(sr[s].label)) {
            nlab++;
            wmax = textlen(sr[s].label) > wmax ? textlen(sr[s].label) : wmax;
        }
    int bw = 44 + wmax * fleg->w, bh = nlab * (fleg->h + 4) + 12, best = -1, corner = 0;
    for (int k = 0; k < 4 && nlab > 0; k++) {
        int x0 = k & 1 ? l->px1 - bw : l->px0, y0 = k & 2 ? l->py1 - bh : l->py0, under = 0;
        for (int s = 0; s < ns; s++)
            for (int i = 0; i < sr[s].n; i++) {
                if (!isfinite(sr[s].x[i]) || !isfinite(sr[s].y[i])) continue;
                int px = infl_scatter_px(l, sr[s].x[i]), py = infl_scatter_py(l, sr[s].y[i]);
                under += px >= x0 && px <= x0 + bw && py >= y0 && py <= y0 + bh;
            }
        if (best < 0 || under < best) best = under, corner = k;
    }
    int ly = (corner & 2 ? l->py1 - bh : l->py0) + 8;
    for (int s = 0; s < ns; s++) {
        if (!nonempty(sr[s].label)) continue;
        int lx = (corner & 1 ? l->px1 - bw : l->px0) + 10, w = textlen(sr[s].label) * fleg->w;
        gdImageFilledRectangle(im, lx - 4, ly - 2, lx + 26 + w + 4, ly + fleg->h + 1, RGB(C_BACKGROUND));
        gdImageSetThickness(im, 2);
        gdImageLine(im, lx, ly + fleg->h / 2, lx + 20, ly + fleg->h / 2, RGB(sr[s].colour));
        gdImageSetThickness(im, 1);
        gdImageString(im, fleg, lx + 26, ly, (unsigned char *)sr[s].label, RGB(C_TEXT));
        ly += fleg->h + 4;
    }

    // the frame last, over grid ends and point edges
    gdImageRectangle(im, l->px0, l->py0, l->px1, l->py1, RGB(C_AXIS));
}

infl_status infl_png_scatter(infl_ctx *ctx, const char *path, int force, const double *x, const double *y, int n,
                             const char *xlabel, const char *ylabel, const char *title, const char *subtitle,
                             int diagonal) {
    infl_series one = {.x = x, .y = y, .n = n, .points = 1};
    return infl_png_plot(ctx, path, force, &one, 1, xlabel, ylabel, title, subtitle, diagonal);
}

infl_status infl_png_plot(infl_ctx *ctx, const char *path, int force, const infl_series *sr, int ns,
                          const char *xlabel, const char *ylabel, const char *title, const char *subtitle,
                          int diagonal) {
    scatter_geom g;
    FORWARD_IF_ERROR(scatter_geom_compute(ctx, sr, ns, diagonal, xlabel, ylabel, title, subtitle, &g));
    gdImagePtr im = NULL;
    char *tmp = NULL;
    infl_status rc;
    CHECK(png_begin(ctx, path, force, &tmp));
    im = gdImageCreateTrueColor(INFL_SCATTER_W, INFL_SCATTER_H);
    GOTO_IF(ctx, !im, INFL_E_NOMEM, "%s: libgd cannot allocate a %d x %d picture", path, INFL_SCATTER_W,
            INFL_SCATTER_H);
    scatter_draw(im, &g, sr, ns, xlabel, ylabel, title, subtitle, diagonal);
    rc = png_finish(ctx, im, path, tmp);
done:
    if (im) gdImageDestroy(im);
    free(tmp);
    return rc;
}
