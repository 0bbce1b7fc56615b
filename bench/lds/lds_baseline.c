/*
 * lds_baseline.c — baselines for `infl lds`, outside the build: overwrites /scores [M, N] of
 * OUT.h5 (a copy of a real scores file for the same queries and training rows) with a score
 * that does not depend on the query: "const" (1 for every row: the prediction is minus the
 * subset's size) or "len" (the tokens of the document the GPT was trained on, min(len + 1,
 * context)), and sets @method to baseline-<kind>. A method should beat both.
 *   gcc -O2 -I/usr/include/hdf5/serial bench/lds/lds_baseline.c \
 *       -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5 -o build/lds_baseline
 *   cp s_graddot.h5 s_const.h5 && build/lds_baseline s_const.h5 const fortunes.h5 FIRST_DOC CONTEXT
 */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int c, char **v) {
    if (c < 6) return 2;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const char *kind = v[2];
    long first = atol(v[4]), ctx = atol(v[5]);
    hid_t f = H5Fopen(v[1], H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/scores", H5P_DEFAULT);
    hid_t s = H5Dget_space(d); hsize_t dims[2]; H5Sget_simple_extent_dims(s, dims, NULL);
    size_t M = dims[0], N = dims[1];
    float *sc = malloc(M * N * sizeof *sc);
    long long *off = malloc((first + N + 1) * sizeof *off);
    hid_t g = H5Fopen(v[3], H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t od = H5Dopen2(g, "/train/offsets", H5P_DEFAULT);
    if (od < 0) { fprintf(stderr, "no /train/offsets\n"); return 1; }
    hid_t os = H5Dget_space(od); hsize_t on; H5Sget_simple_extent_dims(os, &on, NULL);
    long long *all = malloc(on * sizeof *all);
    H5Dread(od, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, all);
    for (size_t q = 0; q < M; q++)
        for (size_t i = 0; i < N; i++) {
            long long len = all[first + i + 1] - all[first + i] + 1;
            if (len > ctx) len = ctx;
            sc[q * N + i] = strcmp(kind, "len") == 0 ? (float)len : 1.0f;
        }
    if (H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, sc) < 0) return 1;
    H5Adelete(f, "method");
    char name[64]; snprintf(name, sizeof name, "baseline-%s", kind);
    hid_t t = H5Tcopy(H5T_C_S1); H5Tset_size(t, strlen(name));
    hid_t as = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "method", t, as, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, name);
    H5Aclose(a); H5Sclose(as); H5Tclose(t);
    H5Dclose(od); H5Fclose(g); H5Sclose(s); H5Dclose(d); H5Fclose(f);
    printf("%s: %zu x %zu, %s\n", v[1], M, N, name);
    return 0;
}
