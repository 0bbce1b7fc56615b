/*
 * render.h — pictures for people: a contact sheet of image tiles with captions (the
 * query beside its proponents and opponents) and a plot of series on shared axes: a
 * scatter plot (one estimator's scores against another's) or lines (Data Shapley's
 * removal curves). PNG through libgd, text in libgd's built-in fonts.
 * Part of the CLI layer (infl_cli); the library proper knows nothing of pictures.
 *
 * Both writers validate their arguments (INFL_E_ARG), refuse an existing output
 * without `force` (INFL_E_EXISTS), write a temporary file beside `path` and rename
 * it into place, and leave nothing behind on failure. Thread-safe for distinct
 * contexts (libgd's fonts are read-only tables).
 */
#ifndef INFL_RENDER_H
#define INFL_RENDER_H

#include <math.h>
#include <stdint.h>

#include "infl.h"

#define INFL_TILE_NO_FRAME 0xFFFFFFFFu

typedef struct {
    const float *pixels;  // (h, w, c) row-major, values in [0,1] (clamped; NaN shows black);
                          // c = 1 (grey) or 3 (RGB); NULL: an empty tile (h, w, c ignored)
    int h, w, c;
    const char *line1;  // first caption line (e.g. "#12345 Sneaker"), may be NULL
    const char *line2;  // second caption line (e.g. "+3.21e-02"), may be NULL
    uint32_t frame;     // 0xRRGGBB frame colour, or INFL_TILE_NO_FRAME
} infl_tile;

// ---- contact sheet ----

// Writes a PNG contact sheet: `rows` rows of `cols` tiles (tiles is (rows, cols),
// tiles[r*cols + c]). Each image is scaled up by the integer factor
// ceil(INFL_SHEET_MIN_PX / w) (nearest neighbour) and centred in a cell shared by the
// whole sheet; captions (up to INFL_SHEET_CAPTION_MAX characters, longer ones end in
// "..") go under each tile; `title` (may be NULL) on top; `col_headers` (cols entries,
// or NULL) over the columns: a header repeated over adjacent columns is drawn once,
// spanning them, and a gap with a thin rule separates column groups whose headers
// differ (NULL and "" both mean "unlabelled"). Returns INFL_OK, INFL_E_ARG (bad shapes,
// frame colour, a sheet over INFL_PNG_MAX_SIDE px), INFL_E_EXISTS, INFL_E_IO or
// INFL_E_NOMEM, with a detail in ctx.
infl_status infl_png_contact_sheet(infl_ctx *ctx, const char *path, int force, const infl_tile *tiles, int rows,
                                   int cols, const char *title, const char *const *col_headers);

// Layout constants of the contact sheet, in px.
#define INFL_SHEET_MIN_PX 84       // every image is scaled to at least this width
#define INFL_SHEET_MARGIN 16       // around everything
#define INFL_SHEET_GAP 14          // between columns of one group
#define INFL_SHEET_GROUP_GAP 34    // between column groups (a rule in the middle)
#define INFL_SHEET_ROW_GAP 14      // between a row's captions and the next row's images
#define INFL_SHEET_FRAME 3         // frame thickness, outside the image
#define INFL_SHEET_CAPTION_MAX 24  // characters per caption line

typedef struct {
    int x, y, w, h;  // left, top, width, height in px
} infl_rect;

// Where infl_png_contact_sheet puts things, for the tests and for callers that want to
// annotate: the picture's size (*width, *height), the scaled image of tile (r, c)
// (`image`, w = scale * tile.w; the frame, when there is one, lies INFL_SHEET_FRAME px
// outside it) and its caption band (`caption`, the first line's text starts at its top).
// `scale` is the integer factor. Any output pointer may be NULL. Same validation and
// errors as infl_png_contact_sheet (without the file ones); (r, c) must be in range.
infl_status infl_sheet_place(infl_ctx *ctx, const infl_tile *tiles, int rows, int cols, const char *title,
                             const char *const *col_headers, int r, int c, int *width, int *height,
                             infl_rect *image, infl_rect *caption, int *scale);

// ---- scatter plot ----

// Writes a PNG scatter plot (INFL_SCATTER_W x INFL_SCATTER_H px) of the n points
// (x[i], y[i]) (x, y are (n,)): axes with ticks and labels at round values, light grid
// lines, axis labels, a title and a subtitle line under it (each may be NULL), and the
// line y = x when `diagonal` is set (then both axes share one range). Points with a
// non-finite coordinate are skipped; at least one must be finite, else INFL_E_ARG.
// Returns INFL_OK, INFL_E_ARG, INFL_E_EXISTS, INFL_E_IO or INFL_E_NOMEM.
infl_status infl_png_scatter(infl_ctx *ctx, const char *path, int force, const double *x, const double *y, int n,
                             const char *xlabel, const char *ylabel, const char *title, const char *subtitle,
                             int diagonal);

// One series of a plot: n points (x[i], y[i]) (x, y are (n,)), drawn as partly
// transparent points (points = 1: a scatter; colour 0 is the scatter's blue) or as a
// line through them in their order with a marker on each (points = 0), in colour
// 0xRRGGBB; a labelled series gets a legend entry (top left of the plot area).
typedef struct {
    const double *x, *y;
    int n;
    const char *label;  // may be NULL: no legend entry
    uint32_t colour;
    int points;
} infl_series;

// Writes a PNG plot of ns series on shared axes, as infl_png_scatter does for one
// (which is this with one series of points). Same validation and errors; a series
// with no points or a colour above 0xFFFFFF is INFL_E_ARG.
infl_status infl_png_plot(infl_ctx *ctx, const char *path, int force, const infl_series *s, int ns,
                          const char *xlabel, const char *ylabel, const char *title, const char *subtitle,
                          int diagonal);

#define INFL_SCATTER_W 720
#define INFL_SCATTER_H 560
#define INFL_PNG_MAX_SIDE 16384  // the largest picture side either writer makes

typedef struct {
    int px0, py0, px1, py1;      // plot area: x from px0 (left) to px1, y from py0 (top) to py1 (bottom)
    double xlo, xhi, ylo, yhi;   // the data values at the plot area's edges
    double xstep, ystep;         // tick spacing (ticks at the multiples inside the range)
} infl_scatter_layout;

// The plot area and ranges infl_png_scatter uses for these arguments (the texts'
// presence moves the plot area; same validation, no file).
infl_status infl_scatter_place(infl_ctx *ctx, const double *x, const double *y, int n, const char *xlabel,
                               const char *ylabel, const char *title, const char *subtitle, int diagonal,
                               infl_scatter_layout *out);

// The pixel column / row of data value v (not clamped to the plot area).
static inline int infl_scatter_px(const infl_scatter_layout *l, double v) {
    return l->px0 + (int)lround((v - l->xlo) / (l->xhi - l->xlo) * (l->px1 - l->px0));
}
static inline int infl_scatter_py(const infl_scatter_layout *l, double v) {
    return l->py1 - (int)lround((v - l->ylo) / (l->yhi - l->ylo) * (l->py1 - l->py0));
}

#endif
