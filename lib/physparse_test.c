/* physparse_test: the frame reader and the scorer of moe-rollout --physics.
 *
 * Round trip: every scenario type of phys-gen, simulated, has its text read
 * back frame by frame, and each position and velocity equals the truth as
 * phys-gen prints it (%.1f, so ties round as printf does), the state word the
 * one the speed thresholds give. Malformed frames (a wrong number, an object
 * missing or out of order, a stray space, an exponent, a missing newline) are
 * refused. The scorer is checked on hand-made text against hand-made truth
 * whose errors are known exactly (3-4-5 triangles in a 30 x 40 world, whose
 * diagonal is 50), so it cannot pass by comparing a thing with itself. */
#include "physgen.h"
#include "physparse.h"
#include "tap.h"

/* The value phys-gen prints for V: %.1f read back. */
static double printed(double v)
{
    char b[64];
    snprintf(b, sizeof b, "%.1f", v);
    return strtod(b, NULL);
}

static void round_trip(void)
{
    gk_phys_scene s = {0};
    gk_phys_opts o = {.frames = 12, .dt = 0.05, .substeps = 10, .min_obj = 1, .max_obj = 20};
    for (int t = 0; t < gk_phys_ntypes(); t++) {
        for (int idx = 0; idx < 2; idx++) {
            gk_phys_run(t, 7, (uint64_t)idx, &o, &s);
            size_t hl = 0, len = strlen(s.text);
            int nobj = gk_phys_header(s.text, len, &hl), bad = 0, f;
            double pos[2 * GK_PHYS_MAX_OBJECTS], vel[2 * GK_PHYS_MAX_OBJECTS];
            size_t p = hl;
            for (f = 0; f < s.nframes && !bad; f++) {
                int state = -1;
                size_t k = gk_phys_parse_frame(s.text + p, len - p, f + 1, nobj, pos, vel, &state);
                if (!k) {
                    bad = 1;
                    break;
                }
                p += k;
                double vmax = 0;
                for (int i = 0; i < 2 * nobj; i += 2) {
                    const double *tp = s.pos + ((size_t)f * s.nobj * 2), *tv = s.vel + ((size_t)f * s.nobj * 2);
                    bad |= pos[i] != printed(tp[i]) || pos[i + 1] != printed(tp[i + 1]) ||
                           vel[i] != printed(tv[i]) || vel[i + 1] != printed(tv[i + 1]);
                    vmax = fmax(vmax, sqrt(tv[i] * tv[i] + tv[i + 1] * tv[i + 1]));
                }
                bad |= state != (vmax >= GK_PHYS_MOVING     ? GK_PHYS_STATE_MOVING
                                 : vmax >= GK_PHYS_SETTLING ? GK_PHYS_STATE_SETTLING
                                                            : GK_PHYS_STATE_RESTING);
            }
            ok(nobj == s.nobj && !bad && f == s.nframes && p == len,
               "%s scene %d: %d objects, %d frames read back as the truth printed",
               gk_phys_type_name(t), idx, s.nobj, s.nframes);
        }
    }
    gk_phys_scene_free(&s);
}

/* Frame 3 of two objects, well formed, then variants that are not. */
#define GOOD "Frame 3: settling\no0 13.0,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n"

static void malformed(void)
{
    double pos[4], vel[4];
    int state = -1;
    size_t n = gk_phys_parse_frame(GOOD, strlen(GOOD), 3, 2, pos, vel, &state);
    ok(n == strlen(GOOD) && pos[0] == 13 && pos[1] == 14 && vel[0] == 0.5 && vel[1] == -1 &&
           pos[2] == 20 && pos[3] == 30 && state == GK_PHYS_STATE_SETTLING,
       "a well-formed frame: its bytes, positions, velocities and state");
    static const char *const bad[] = {
        "Frame 4: settling\no0 13.0,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n",  /* wrong N */
        "Frame 3: sliding\no0 13.0,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n",   /* state word */
        "Frame 3: settling\no1 13.0,14.0 0.5,-1.0\no0 20.0,30.0 0.0,0.0\n",  /* order */
        "Frame 3: settling\no0 13.0,14.0 0.5,-1.0\n",                         /* missing */
        "Frame 3: settling\no0 13.0,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0",    /* no newline */
        "Frame 3: settling\no0  13.0,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n", /* space */
        "Frame 3: settling\no0 13,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n",    /* no decimals */
        "Frame 3: settling\no0 1.3e1,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n", /* exponent */
        "Frame 3: settling\no0 +13.0,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n", /* plus */
        "Frame 3: settling\no0 13.0,14.0\no1 20.0,30.0 0.0,0.0\n",           /* no velocity */
        "Frame 3: settling\no0 13.0 14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n",  /* no comma */
        "frame 3: settling\no0 13.0,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n",  /* case */
        "Frame 03: settling\no0 13.0,14.0 0.5,-1.0\no1 20.0,30.0 0.0,0.0\n", /* leading 0 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ok(gk_phys_parse_frame(bad[i], strlen(bad[i]), 3, 2, pos, vel, &state) == 0,
           "malformed variant %zu is refused", i);
}

static void scoring(void)
{
    const double world[2] = {30, 40}; /* diagonal 50 */
    /* truth for frames 3 and 4: object 0 at (10,10), object 1 at (20,30) */
    const double truth[8] = {10, 10, 20, 30, 10, 10, 20, 30};
    double pred[4] = {13, 14, 20, 30};
    ok(fabs(gk_phys_err_pct(pred, truth, 2, world) - 5) < 1e-12,
       "error: (3,4) off on one of two objects in a 30x40 world is 5%%");
    const char *two = GOOD "Frame 4: moving\no0 10.0,10.0 0.0,0.0\no1 26.0,38.0 0.0,0.0\n";
    double err[3];
    int good = gk_phys_score(two, strlen(two), 3, 2, 2, truth, world, err);
    ok(good == 2 && fabs(err[0] - 5) < 1e-12 && fabs(err[1] - 10) < 1e-12,
       "score: frames 3 and 4 at 5%% and 10%% (found %d, %g, %g)", good, err[0], err[1]);
    const char *third = GOOD "Frame 5: moving\no0 10.0,10.0 0.0,0.0\no1 26.0,38.0 0.0,0.0\n";
    good = gk_phys_score(third, strlen(third), 3, 2, 2, truth, world, err);
    ok(good == 1 && fabs(err[0] - 5) < 1e-12 && isnan(err[1]),
       "score: a frame with the wrong number is malformed (null), the one before scored");
    const double truth3[12] = {10, 10, 20, 30, 10, 10, 20, 30, 10, 10, 20, 30};
    const char *mid = "Frame 3: moving\no0 x\nFrame 4: moving\no0 10.0,10.0 0.0,0.0\n"
                      "o1 20.0,30.0 0.0,0.0\n";
    good = gk_phys_score(mid, strlen(mid), 3, 3, 2, truth3, world, err);
    ok(good == 0 && isnan(err[0]) && isnan(err[1]) && isnan(err[2]),
       "score: after a malformed frame every later one is malformed, even if well formed");
    good = gk_phys_score(GOOD, strlen(GOOD), 3, 3, 2, truth3, world, err);
    ok(good == 1 && fabs(err[0] - 5) < 1e-12 && isnan(err[1]) && isnan(err[2]),
       "score: frames never written (the text ended) are malformed");
    const char *hdr = "world 30.0 40.0 g -9.8 damp 1.00 dt 0.05\nwall 1.0,2.0 3.0,4.0\n"
                      "o0 circle r1.0 m1.0 e0.50 f0.50 p10.0,10.0 v0.0,0.0\n"
                      "o1 box w1.0 h1.0 a0 m1.0 e0.50 f0.50 p20.0,30.0 v0.0,0.0\n"
                      "pin o0 5.0,5.0\n" GOOD;
    size_t hl = 0;
    ok(gk_phys_header(hdr, strlen(hdr), &hl) == 2 && !strncmp(hdr + hl, "Frame 3:", 8),
       "header: 2 objects (pin not counted), ends at the first Frame line");
    ok(gk_phys_header("world 1.0 1.0\n", 14, &hl) == -1, "header: no Frame line is -1");
}

int main(void)
{
    round_trip();
    malformed();
    scoring();
    return tap_done();
}
