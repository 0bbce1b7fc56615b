/*
 * test_render.c — the pictures (host/cli/render.c): contact sheets and scatter plots
 * are written, read back with libgd and checked pixel by pixel where the layout
 * (infl_sheet_place / infl_scatter_place and the constants in render.h) says things
 * are; output safety (no overwrite without force, no temporary file left behind) and
 * every argument the writers reject.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <dirent.h>
#include <gd.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/render.h"
#include "infl.h"
#include "testutil.h"

#define ASSERT_OK(ctx, expr) cr_assert_eq((expr), INFL_OK, "%s: %s", #expr, infl_ctx_error(ctx))
#define ASSERT_ERR(ctx, expr, st, needle)                                                         \
    do {                                                                                          \
        infl_status got_ = (expr);                                                                \
        cr_assert_eq(got_, (st), "%s: got %s (%s), expected %s", #expr, infl_status_name(got_),   \
                     infl_ctx_error(ctx), #st);                                                   \
        cr_assert(strstr(infl_ctx_error(ctx), (needle)) != NULL, "detail '%s' lacks '%s'",        \
                  infl_ctx_error(ctx), (needle));                                                 \
    } while (0)

// ---- helpers ----

static gdImagePtr load_png(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "cannot open %s", path);
    gdImagePtr im = gdImageCreateFromPng(f);
    fclose(f);
    cr_assert(im != NULL, "%s is not a PNG libgd can read", path);
    return im;
}

static uint32_t rgb_at(gdImagePtr im, int x, int y) {
    cr_assert(x >= 0 && y >= 0 && x < gdImageSX(im) && y < gdImageSY(im), "(%d, %d) outside %d x %d", x, y,
              gdImageSX(im), gdImageSY(im));
    int p = gdImageGetTrueColorPixel(im, x, y);
    return (uint32_t)(gdTrueColorGetRed(p) << 16 | gdTrueColorGetGreen(p) << 8 | gdTrueColorGetBlue(p));
}

static int brightness(uint32_t c) { return (int)(((c >> 16) & 0xFF) + ((c >> 8) & 0xFF) + (c & 0xFF)) / 3; }

// Pixels in the rectangle darker than `below` (0..255 mean channel).
static int count_dark(gdImagePtr im, infl_rect r, int below) {
    int n = 0;
    for (int y = r.y; y < r.y + r.h; y++)
        for (int x = r.x; x < r.x + r.w; x++) n += brightness(rgb_at(im, x, y)) < below;
    return n;
}

// Entries in the test's folder (without . and ..); *tmps counts names holding ".tmp".
static int count_files(int *tmps) {
    DIR *d = opendir(tu_tmpdir());
    cr_assert(d != NULL);
    int n = 0;
    *tmps = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        if (strstr(e->d_name, ".tmp")) ++*tmps;
    }
    closedir(d);
    return n;
}

static int channel8(float v) { return (int)lrintf(v * 255.0f); }

// ---- a 2 x 5 sheet with known pixels ----

#define ROWS 2
#define COLS 5
#define TH 6  // tile height
#define TW 4  // tile width
#define FRAME_COLOUR 0x123456u

// Tile k's pixel (i, j), channel ch: a value unique enough to catch misplacement.
static float pix(int k, int i, int j, int ch) { return (float)((k * 37 + i * 11 + j * 5 + ch * 60) % 256) / 255.0f; }

typedef struct {
    float px[ROWS * COLS][TH * TW * 3];
    char l1[ROWS * COLS][32], l2[ROWS * COLS][32];
    infl_tile t[ROWS * COLS];
} sheet_fixture;

// Tiles: grey except (0, 2) and (1, 4) in RGB; (0, 1) and (1, 3) framed; (1, 2) empty;
// every tile captioned except (0, 4).
static const char *const HEADERS[COLS] = {"query", "proponents", "proponents", "opponents", "opponents"};

static void make_sheet(sheet_fixture *f) {
    memset(f, 0, sizeof *f);
    for (int k = 0; k < ROWS * COLS; k++) {
        int c = (k == 2 || k == 9) ? 3 : 1;
        for (int i = 0; i < TH; i++)
            for (int j = 0; j < TW; j++)
                for (int ch = 0; ch < c; ch++) f->px[k][(i * TW + j) * c + ch] = pix(k, i, j, ch);
        snprintf(f->l1[k], 32, "#%d Sneaker", 12345 + k);
        snprintf(f->l2[k], 32, "%+.2e", 0.0321 * (k - 4));
        f->t[k] = (infl_tile){f->px[k], TH, TW, c, f->l1[k], f->l2[k], INFL_TILE_NO_FRAME};
    }
    f->t[1].frame = FRAME_COLOUR;
    f->t[8].frame = 0xFF0000;
    f->t[7].pixels = NULL;
    f->t[4].line1 = f->t[4].line2 = NULL;
}

Test(render, sheet_size_and_pixels) {
    infl_ctx *ctx = tu_ctx();
    static sheet_fixture f;
    make_sheet(&f);
    const char *path = tu_path("sheet.png");
    ASSERT_OK(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, "a title", (const char *const *)HEADERS));
    gdImagePtr im = load_png(path);
    int W, H;
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "a title", HEADERS, 0, 0, &W, &H, NULL, NULL, NULL));
    cr_assert_eq(gdImageSX(im), W);
    cr_assert_eq(gdImageSY(im), H);
    // at least five scaled tiles with their gaps across, two rows down
    cr_assert_geq(W, 2 * INFL_SHEET_MARGIN + COLS * INFL_SHEET_MIN_PX + (COLS - 1) * INFL_SHEET_GAP);
    cr_assert_geq(H, 2 * INFL_SHEET_MARGIN + ROWS * (TH * ((INFL_SHEET_MIN_PX + TW - 1) / TW)));

    // every pixel of every non-empty tile, at the centre of its scaled block
    for (int k = 0; k < ROWS * COLS; k++) {
        if (!f.t[k].pixels) continue;
        infl_rect r;
        int s;
        ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "a title", HEADERS, k / COLS, k % COLS, NULL, NULL,
                                        &r, NULL, &s));
        cr_assert_eq(s, (INFL_SHEET_MIN_PX + TW - 1) / TW, "scale %d", s);
        cr_assert_eq(r.w, s * TW);
        cr_assert_eq(r.h, s * TH);
        cr_assert(r.x >= INFL_SHEET_MARGIN && r.y >= INFL_SHEET_MARGIN && r.x + r.w <= W - INFL_SHEET_MARGIN &&
                  r.y + r.h <= H - INFL_SHEET_MARGIN);
        for (int i = 0; i < TH; i++)
            for (int j = 0; j < TW; j++) {
                int c = f.t[k].c;
                uint32_t want = 0;
                for (int ch = 0; ch < 3; ch++) want = want << 8 | (uint32_t)channel8(pix(k, i, j, c == 3 ? ch : 0));
                // the centre and the corners of the block: crisp nearest-neighbour scaling
                int xs[3] = {r.x + j * s + s / 2, r.x + j * s, r.x + j * s + s - 1};
                int ys[3] = {r.y + i * s + s / 2, r.y + i * s, r.y + i * s + s - 1};
                for (int q = 0; q < 3; q++) {
                    uint32_t got = rgb_at(im, xs[q], ys[q]);
                    cr_assert_eq(got, want, "tile %d pixel (%d, %d) at (%d, %d): %06X, expected %06X", k, i, j,
                                 xs[q], ys[q], got, want);
                }
            }
    }
    gdImageDestroy(im);
    infl_ctx_free(ctx);
}

Test(render, sheet_frames) {
    infl_ctx *ctx = tu_ctx();
    static sheet_fixture f;
    make_sheet(&f);
    const char *path = tu_path("frames.png");
    ASSERT_OK(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, NULL, NULL));
    gdImagePtr im = load_png(path);
    const int F = INFL_SHEET_FRAME;
    // framed tiles (0, 1) and (1, 3): their colour on all four sides, every frame px deep
    int framed[2] = {1, 8};
    for (int q = 0; q < 2; q++) {
        int k = framed[q];
        uint32_t want = f.t[k].frame;
        infl_rect r;
        ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, NULL, NULL, k / COLS, k % COLS, NULL, NULL, &r, NULL,
                                        NULL));
        for (int d = 1; d <= F; d++) {
            cr_assert_eq(rgb_at(im, r.x - d, r.y + r.h / 2), want, "left side of tile %d, %d px out", k, d);
            cr_assert_eq(rgb_at(im, r.x + r.w - 1 + d, r.y + r.h / 2), want, "right side of tile %d", k);
            cr_assert_eq(rgb_at(im, r.x + r.w / 2, r.y - d), want, "top of tile %d", k);
            cr_assert_eq(rgb_at(im, r.x + r.w / 2, r.y + r.h - 1 + d), want, "bottom of tile %d", k);
        }
        // and only that deep
        cr_assert_eq(rgb_at(im, r.x - F - 1, r.y + r.h / 2), 0xFFFFFFu, "frame of tile %d is too thick", k);
    }
    // an unframed tile has background around it
    infl_rect r;
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, NULL, NULL, 0, 0, NULL, NULL, &r, NULL, NULL));
    for (int d = 1; d <= F; d++) cr_assert_eq(rgb_at(im, r.x - d, r.y + r.h / 2), 0xFFFFFFu);
    // the empty tile (1, 2) is a point at its cell's centre, with background around it
    infl_rect e;
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, NULL, NULL, 1, 2, NULL, NULL, &e, NULL, NULL));
    cr_assert_eq(e.w, 0);
    cr_assert_eq(count_dark(im, (infl_rect){e.x - 40, e.y - 40, 80, 80}, 250), 0,
                 "the empty tile has something drawn in its cell");
    gdImageDestroy(im);
    infl_ctx_free(ctx);
}

Test(render, sheet_captions_and_headers) {
    infl_ctx *ctx = tu_ctx();
    static sheet_fixture f;
    make_sheet(&f);
    const char *path = tu_path("captions.png");
    ASSERT_OK(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, "the title", HEADERS));
    gdImagePtr im = load_png(path);
    // captioned tiles have dark text in their band (both lines), the uncaptioned (0, 4) none
    for (int k = 0; k < ROWS * COLS; k++) {
        infl_rect cap;
        ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "the title", HEADERS, k / COLS, k % COLS, NULL, NULL,
                                        NULL, &cap, NULL));
        cr_assert_eq(cap.h, 2 * 13, "two lines of the small font");
        infl_rect top = {cap.x, cap.y, cap.w, cap.h / 2}, bottom = {cap.x, cap.y + cap.h / 2, cap.w, cap.h / 2};
        int d1 = count_dark(im, top, 128), d2 = count_dark(im, bottom, 128);
        if (f.t[k].line1) {
            cr_assert_gt(d1, 20, "tile %d: %d dark pixels in the first caption line", k, d1);
            cr_assert_gt(d2, 20, "tile %d: %d dark pixels in the second caption line", k, d2);
        } else {
            cr_assert_eq(d1 + d2, 0, "tile %d has no caption but %d dark pixels under it", k, d1 + d2);
        }
    }
    // the title and the headers sit above the first row and are dark
    infl_rect r00, r01, r02, r03;
    int W;
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "the title", HEADERS, 0, 0, &W, NULL, &r00, NULL, NULL));
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "the title", HEADERS, 0, 1, NULL, NULL, &r01, NULL, NULL));
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "the title", HEADERS, 0, 2, NULL, NULL, &r02, NULL, NULL));
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "the title", HEADERS, 0, 3, NULL, NULL, &r03, NULL, NULL));
    int above = r00.y - INFL_SHEET_FRAME;
    cr_assert_gt(count_dark(im, (infl_rect){0, 0, W, above}, 128), 100, "no title or headers above the tiles");
    // "proponents" is drawn once, centred over columns 1 and 2: dark pixels above the gap
    // between them, none above the middle of column 1 alone (the word is centred on the gap)
    int gap_x = (r01.x + r01.w + r02.x) / 2;
    cr_assert_gt(count_dark(im, (infl_rect){gap_x - 3, INFL_SHEET_MARGIN, 7, above - INFL_SHEET_MARGIN}, 128), 0,
                 "no header over the gap inside the 'proponents' group");
    // groups: a wider gap where the header changes than inside a group
    int in_group = r02.x - (r01.x + r01.w), across = r03.x - (r02.x + r02.w);
    cr_assert_eq(across - in_group, INFL_SHEET_GROUP_GAP - INFL_SHEET_GAP, "gaps %d inside, %d across", in_group,
                 across);
    gdImageDestroy(im);

    // without headers the gaps are all the same and the tiles move up
    infl_rect n01, n02, n03;
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "the title", NULL, 0, 1, NULL, NULL, &n01, NULL, NULL));
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "the title", NULL, 0, 2, NULL, NULL, &n02, NULL, NULL));
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, "the title", NULL, 0, 3, NULL, NULL, &n03, NULL, NULL));
    cr_assert_eq(n02.x - n01.x, n03.x - n02.x);
    cr_assert_lt(n01.y, r01.y);
    infl_ctx_free(ctx);
}

Test(render, sheet_odd_sizes) {
    // tiles of different sizes and a wide one: each its own integer scale, all within the sheet
    infl_ctx *ctx = tu_ctx();
    static float a[3 * 5], b[100 * 120 * 3];
    for (int i = 0; i < 15; i++) a[i] = (float)i / 14.0f;
    for (int i = 0; i < 100 * 120 * 3; i++) b[i] = 0.25f;
    infl_tile t[2] = {{a, 3, 5, 1, "small", NULL, 0x00FF00}, {b, 100, 120, 3, NULL, "big", INFL_TILE_NO_FRAME}};
    const char *path = tu_path("odd.png");
    ASSERT_OK(ctx, infl_png_contact_sheet(ctx, path, 0, t, 1, 2, NULL, NULL));
    gdImagePtr im = load_png(path);
    infl_rect r0, r1;
    int s0, s1, W, H;
    ASSERT_OK(ctx, infl_sheet_place(ctx, t, 1, 2, NULL, NULL, 0, 0, &W, &H, &r0, NULL, &s0));
    ASSERT_OK(ctx, infl_sheet_place(ctx, t, 1, 2, NULL, NULL, 0, 1, NULL, NULL, &r1, NULL, &s1));
    cr_assert_eq(gdImageSX(im), W);
    cr_assert_eq(gdImageSY(im), H);
    cr_assert_eq(s0, 17);  // ceil(84 / 5)
    cr_assert_eq(s1, 1);
    // a's pixel (1, 2) is 7/14 = 0.5 -> 128; b is 0.25 -> 64 everywhere
    cr_assert_eq(rgb_at(im, r0.x + 2 * s0 + s0 / 2, r0.y + 1 * s0 + s0 / 2), 0x808080u);
    cr_assert_eq(rgb_at(im, r0.x - 1, r0.y), 0x00FF00u);
    cr_assert_eq(rgb_at(im, r1.x + 60, r1.y + 50), 0x404040u);
    gdImageDestroy(im);
    infl_ctx_free(ctx);
}

// ---- output safety ----

Test(render, existing_output_and_temp_files) {
    infl_ctx *ctx = tu_ctx();
    static sheet_fixture f;
    make_sheet(&f);
    const char *path = tu_path("out.png");
    tu_write_file(path, "keep me", 7);
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_EXISTS, path);
    size_t n;
    char *got = tu_read_file(path, &n);
    cr_assert(got && n == 7 && !memcmp(got, "keep me", 7), "the existing file was touched");
    free(got);
    double x[2] = {0, 1}, y[2] = {1, 0};
    ASSERT_ERR(ctx, infl_png_scatter(ctx, path, 0, x, y, 2, "x", "y", "t", "s", 1), INFL_E_EXISTS, path);
    got = tu_read_file(path, &n);
    cr_assert(got && n == 7 && !memcmp(got, "keep me", 7), "the existing file was touched");
    free(got);
    int tmps;
    cr_assert_eq(count_files(&tmps), 1);
    cr_assert_eq(tmps, 0);

    // with force: replaced by a PNG, nothing else left
    ASSERT_OK(ctx, infl_png_contact_sheet(ctx, path, 1, f.t, ROWS, COLS, NULL, NULL));
    got = tu_read_file(path, &n);
    cr_assert(got && n > 8 && !memcmp(got, "\x89PNG\r\n\x1a\n", 8), "not replaced by a PNG");
    free(got);
    ASSERT_OK(ctx, infl_png_scatter(ctx, path, 1, x, y, 2, "x", "y", "t", "s", 1));
    gdImagePtr im = load_png(path);
    cr_assert_eq(gdImageSX(im), INFL_SCATTER_W);
    gdImageDestroy(im);
    cr_assert_eq(count_files(&tmps), 1);
    cr_assert_eq(tmps, 0);

    // a folder that does not exist: INFL_E_IO naming the path and the reason, nothing left
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/no-such-dir/x.png", tu_tmpdir());
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, bad, 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_IO, bad);
    cr_assert(strstr(infl_ctx_error(ctx), "No such file or directory"), "%s", infl_ctx_error(ctx));
    ASSERT_ERR(ctx, infl_png_scatter(ctx, bad, 0, x, y, 2, NULL, NULL, NULL, NULL, 0), INFL_E_IO, bad);
    cr_assert_eq(count_files(&tmps), 1);
    cr_assert_eq(tmps, 0);
    infl_ctx_free(ctx);
}

Test(render, write_failure_leaves_nothing) {
    // a file size limit makes writing the temporary file fail part-way (EFBIG); the
    // test runs in its own process, so the limit ends with it
    infl_ctx *ctx = tu_ctx();
    static sheet_fixture f;
    make_sheet(&f);
    const char *path = tu_path("big.png");
    (void)tu_tmpdir();
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {100, 100};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, "t", HEADERS), INFL_E_IO, path);
    double x[2] = {0, 1}, y[2] = {1, 0};
    ASSERT_ERR(ctx, infl_png_scatter(ctx, path, 0, x, y, 2, "x", "y", "t", "s", 1), INFL_E_IO, path);
    int tmps;
    cr_assert_eq(count_files(&tmps), 0, "a failed write left %d files (%d temporary)", count_files(&tmps), tmps);
    infl_ctx_free(ctx);
}

// ---- bad arguments ----

Test(render, bad_arguments) {
    infl_ctx *ctx = tu_ctx();
    static sheet_fixture f;
    make_sheet(&f);
    const char *path = tu_path("bad.png");
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, 0, COLS, NULL, NULL), INFL_E_ARG, "0 rows");
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, 0, NULL, NULL), INFL_E_ARG, "0 columns");
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, NULL, ROWS, COLS, NULL, NULL), INFL_E_ARG, "no tiles");
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, NULL, 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_ARG, "no output");
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, "", 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_ARG, "no output");
    f.t[6].c = 2;
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_ARG,
               "tile (1, 1) has 2 channels");
    f.t[6].c = 1;
    f.t[3].h = 0;
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_ARG,
               "tile (0, 3) is 0 x 4 px");
    f.t[3].h = TH;
    f.t[3].w = -2;
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_ARG, "tile (0, 3)");
    f.t[3].w = TW;
    f.t[5].frame = 0x01000000;
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_ARG, "frame colour");
    f.t[5].frame = INFL_TILE_NO_FRAME;
    f.t[0].w = INFL_PNG_MAX_SIDE + 1;
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, f.t, ROWS, COLS, NULL, NULL), INFL_E_ARG, "at most");
    f.t[0].w = TW;
    // 1 x 400 tiles make a sheet wider than the limit
    static infl_tile wide[400];
    for (int i = 0; i < 400; i++) wide[i] = f.t[0];
    ASSERT_ERR(ctx, infl_png_contact_sheet(ctx, path, 0, wide, 1, 400, NULL, NULL), INFL_E_ARG, "px a side");
    ASSERT_ERR(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, NULL, NULL, ROWS, 0, NULL, NULL, NULL, NULL, NULL),
               INFL_E_ARG, "outside");
    // the fixture is valid again
    ASSERT_OK(ctx, infl_sheet_place(ctx, f.t, ROWS, COLS, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, NULL));

    double x[3] = {NAN, INFINITY, 1}, y[3] = {0, 1, NAN};
    ASSERT_ERR(ctx, infl_png_scatter(ctx, path, 0, x, y, 3, "x", "y", "t", NULL, 0), INFL_E_ARG,
               "none of the 3 points");
    ASSERT_ERR(ctx, infl_png_scatter(ctx, path, 0, x, y, 0, "x", "y", "t", NULL, 0), INFL_E_ARG, "no points");
    ASSERT_ERR(ctx, infl_png_scatter(ctx, path, 0, NULL, y, 3, "x", "y", "t", NULL, 0), INFL_E_ARG, "no points");
    double big[2] = {-1.5e308, 1.5e308};
    ASSERT_ERR(ctx, infl_png_scatter(ctx, path, 0, big, big, 2, "x", "y", "t", NULL, 0), INFL_E_ARG, "too large");
    ASSERT_ERR(ctx, infl_png_scatter(ctx, NULL, 0, x + 2, x + 2, 1, "x", "y", "t", NULL, 0), INFL_E_ARG,
               "no output");
    cr_assert(!tu_exists(path), "a rejected call left %s", path);
    int tmps;
    cr_assert_eq(count_files(&tmps), 0);
    infl_ctx_free(ctx);
}

// ---- scatter ----

// Points off the diagonal, a NaN one (skipped) and the one we look for at (3, 7).
static const double SX[] = {0, 10, 2, 8, 3, NAN, 9.5};
static const double SY[] = {10, 0, 9, 1, 7, 5, NAN};
#define SN 7

Test(render, scatter_points_and_axes) {
    infl_ctx *ctx = tu_ctx();
    const char *path = tu_path("scatter.png");
    ASSERT_OK(ctx, infl_png_scatter(ctx, path, 0, SX, SY, SN, "exact", "estimate", "A title", "Pearson -0.99", 0));
    gdImagePtr im = load_png(path);
    cr_assert_eq(gdImageSX(im), INFL_SCATTER_W);
    cr_assert_eq(gdImageSY(im), INFL_SCATTER_H);
    infl_scatter_layout l;
    ASSERT_OK(ctx, infl_scatter_place(ctx, SX, SY, SN, "exact", "estimate", "A title", "Pearson -0.99", 0, &l));
    cr_assert(l.px0 > 40 && l.px1 < INFL_SCATTER_W - 1 && l.py0 > 30 && l.py1 < INFL_SCATTER_H - 30,
              "plot area (%d, %d)-(%d, %d) leaves no room for labels", l.px0, l.py0, l.px1, l.py1);
    // the data fit inside the ranges, which are round-stepped
    cr_assert(l.xlo < 0 && l.xhi > 10 && l.ylo < 0 && l.yhi > 10);
    double m = l.xstep / pow(10, floor(log10(l.xstep)));
    cr_assert(fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9, "step %g is not round", l.xstep);

    // each finite point: a blue-ish pixel at its centre
    for (int i = 0; i < SN; i++) {
        if (!isfinite(SX[i]) || !isfinite(SY[i])) continue;
        uint32_t c = rgb_at(im, infl_scatter_px(&l, SX[i]), infl_scatter_py(&l, SY[i]));
        cr_assert((c & 0xFF) > ((c >> 16) & 0xFF) + 40, "point %d at (%g, %g): colour %06X", i, SX[i], SY[i], c);
    }
    // no point where there is no data (grid lines are light)
    cr_assert_geq(brightness(rgb_at(im, infl_scatter_px(&l, 7.3), infl_scatter_py(&l, 6.1))), 230);
    // the plot frame is dark, the tick labels left of it make dark pixels, the title too
    cr_assert_lt(brightness(rgb_at(im, l.px0, (l.py0 + l.py1) / 2)), 80);
    cr_assert_gt(count_dark(im, (infl_rect){0, l.py0, l.px0 - 2, l.py1 - l.py0}, 128), 50);
    cr_assert_gt(count_dark(im, (infl_rect){0, l.py1 + 2, INFL_SCATTER_W, INFL_SCATTER_H - l.py1 - 2}, 128), 50);
    cr_assert_gt(count_dark(im, (infl_rect){0, 0, INFL_SCATTER_W, l.py0 - 1}, 128), 50);
    gdImageDestroy(im);
    infl_ctx_free(ctx);
}

// Dark pixels within 1 px of (x, y).
static int dark_near(gdImagePtr im, int x, int y) { return count_dark(im, (infl_rect){x - 1, y - 1, 3, 3}, 200); }

Test(render, scatter_diagonal) {
    infl_ctx *ctx = tu_ctx();
    const char *with = tu_path("diag.png"), *without = tu_path("nodiag.png");
    ASSERT_OK(ctx, infl_png_scatter(ctx, with, 0, SX, SY, SN, NULL, NULL, NULL, NULL, 1));
    ASSERT_OK(ctx, infl_png_scatter(ctx, without, 0, SX, SY, SN, NULL, NULL, NULL, NULL, 0));
    infl_scatter_layout ld, ln;
    ASSERT_OK(ctx, infl_scatter_place(ctx, SX, SY, SN, NULL, NULL, NULL, NULL, 1, &ld));
    ASSERT_OK(ctx, infl_scatter_place(ctx, SX, SY, SN, NULL, NULL, NULL, NULL, 0, &ln));
    cr_assert(ld.xlo == ld.ylo && ld.xhi == ld.yhi, "the diagonal plot's axes share one range");
    gdImagePtr a = load_png(with), b = load_png(without);
    // along y = x, away from points and grid lines
    const double along[] = {4.6, 5.3, 6.7, 1.3};
    for (int i = 0; i < 4; i++) {
        double v = along[i];
        cr_assert_gt(dark_near(a, infl_scatter_px(&ld, v), infl_scatter_py(&ld, v)), 0, "no diagonal at %g", v);
        cr_assert_eq(dark_near(b, infl_scatter_px(&ln, v), infl_scatter_py(&ln, v)), 0, "a diagonal at %g", v);
    }
    gdImageDestroy(a);
    gdImageDestroy(b);
    infl_ctx_free(ctx);
}

Test(render, plot_lines_in_their_colours) {
    // two lines (Data Shapley's removal curves): the middle of each segment has the
    // series' colour; the axes are those of all points together
    infl_ctx *ctx = tu_ctx();
    const double x[3] = {0, 5, 10}, a[3] = {1, 0.9, 0.5}, b[3] = {1, 1.02, 1.05};
    const infl_series s[2] = {{.x = x, .y = a, .n = 3, .label = "down", .colour = 0xD62728},
                              {.x = x, .y = b, .n = 3, .label = "up", .colour = 0x2CA02C}};
    const char *path = tu_path("lines.png");
    ASSERT_OK(ctx, infl_png_plot(ctx, path, 0, s, 2, "removed", "accuracy", "t", NULL, 0));
    double ax[6] = {0, 5, 10, 0, 5, 10}, ay[6] = {1, 0.9, 0.5, 1, 1.02, 1.05};
    infl_scatter_layout l;
    ASSERT_OK(ctx, infl_scatter_place(ctx, ax, ay, 6, "removed", "accuracy", "t", NULL, 0, &l));
    gdImagePtr im = load_png(path);
    uint32_t ca = rgb_at(im, infl_scatter_px(&l, 7.5), infl_scatter_py(&l, 0.7));
    uint32_t cb = rgb_at(im, infl_scatter_px(&l, 7.5), infl_scatter_py(&l, 1.035));
    cr_assert((ca >> 16 & 0xFF) > (ca >> 8 & 0xFF) + 60, "the red line at its middle: %06X", ca);
    cr_assert((cb >> 8 & 0xFF) > (cb >> 16 & 0xFF) + 60, "the green line at its middle: %06X", cb);
    gdImageDestroy(im);
    const infl_series bad = {.x = x, .y = a, .n = 3, .colour = 0x1000000};
    ASSERT_ERR(ctx, infl_png_plot(ctx, tu_path("bad.png"), 0, &bad, 1, NULL, NULL, NULL, NULL, 0), INFL_E_ARG,
               "colour");
    infl_ctx_free(ctx);
}

Test(render, scatter_single_point_and_tiny_values) {
    // one point (a zero span) and values ~1e-6 still make a plot with the point inside
    infl_ctx *ctx = tu_ctx();
    double x[2] = {3e-6, NAN}, y[2] = {-2e-6, 0};
    infl_scatter_layout l;
    ASSERT_OK(ctx, infl_scatter_place(ctx, x, y, 2, "x", "y", NULL, NULL, 0, &l));
    cr_assert(l.xlo < x[0] && x[0] < l.xhi && l.ylo < y[0] && y[0] < l.yhi);
    ASSERT_OK(ctx, infl_png_scatter(ctx, tu_path("one.png"), 0, x, y, 2, "x", "y", NULL, NULL, 0));
    gdImagePtr im = load_png(tu_path("one.png"));
    uint32_t c = rgb_at(im, infl_scatter_px(&l, x[0]), infl_scatter_py(&l, y[0]));
    cr_assert((c & 0xFF) > ((c >> 16) & 0xFF) + 40, "the point is missing: %06X", c);
    gdImageDestroy(im);
    infl_ctx_free(ctx);
}
