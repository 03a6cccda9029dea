/* physgen: the scenario types and the simulation behind phys-gen; see
 * physgen.h for the contract and phys-gen(1) for the text grammar.
 *
 * Each type is a builder that draws a world and its objects from the scene's
 * generator and writes the header as it adds them (world, then static walls
 * and the central force, then objects o0.., then joints), so the header order
 * is the order of construction. Every world is a closed box: four thick walls
 * lie just outside [0,w] x [0,h], so a centre never leaves it (steps are short
 * enough that nothing tunnels through 10 units of wall). Walls have elasticity
 * and friction 1, so the coefficients printed for an object are the ones
 * Chipmunk uses for its contacts with walls (it multiplies the two shapes'). */
#include "physgen.h"
#include "util.h"

#include <chipmunk/chipmunk.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Static walls a builder may add besides the four of the box, and joints. */
#define MAX_SHAPES (GK_PHYS_MAX_OBJECTS + 16)
#define MAX_JOINTS (GK_PHYS_MAX_OBJECTS + 1)
/* Half the thickness of a `wall` line's segment. */
#define WALL_R 0.5

typedef struct {
    gk_phys_scene *out;
    uint64_t rng;
    cpSpace *space;
    double w, h, g;
    cpBody *body[GK_PHYS_MAX_OBJECTS];
    int n;
    cpShape *shape[MAX_SHAPES];
    int nshape;
    cpConstraint *joint[MAX_JOINTS];
    int njoint;
    cpVect center; /* the central force: acceleration k (center - p) */
    double k;
} scene;

/* ---- text ---- */

static void putf(gk_phys_scene *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(gk_phys_scene *s, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(s->text + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
        if (m < 0)
            gk_die("physgen: cannot format scene text");
        if ((size_t)m < s->cap - s->len) {
            s->len += (size_t)m;
            return;
        }
        s->cap = 2 * s->cap + (size_t)m + 256;
        s->text = gk_realloc(s->text, s->cap);
    }
}

/* V at PREC decimals, never "-0.0": a sign on a printed zero would be noise
 * the model has to learn. */
static void putn(gk_phys_scene *s, double v, int prec)
{
    char b[64];
    snprintf(b, sizeof b, "%.*f", prec, v);
    putf(s, "%s", b[0] == '-' && strspn(b + 1, "0.") == strlen(b + 1) ? b + 1 : b);
}

static void putv(gk_phys_scene *s, cpVect v)
{
    putn(s, v.x, 1);
    putf(s, ",");
    putn(s, v.y, 1);
}

/* The value a header number is printed as, so the simulation uses it. */
static double q1(double x) { return round(x * 10) / 10; }
static double q2(double x) { return round(x * 100) / 100; }
static cpVect qv(cpVect v) { return cpv(q1(v.x), q1(v.y)); }

/* ---- randomness: splitmix64, the scene's own stream ---- */

static uint64_t splitmix64(uint64_t *st)
{
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unif(scene *sc, double lo, double hi)
{
    return lo + (hi - lo) * (double)(splitmix64(&sc->rng) >> 11) * 0x1.0p-53;
}

/* An integer in [lo, hi]. */
static int randint(scene *sc, int lo, int hi)
{
    return lo + (int)(splitmix64(&sc->rng) % (uint64_t)(hi - lo + 1));
}

/* ---- building a scene ---- */

static void add_static(scene *sc, cpVect a, cpVect b, double r)
{
    if (sc->nshape == MAX_SHAPES)
        gk_die("physgen: more than %d static shapes", MAX_SHAPES);
    cpShape *sh = cpSegmentShapeNew(cpSpaceGetStaticBody(sc->space), a, b, r);
    cpShapeSetElasticity(sh, 1);
    cpShapeSetFriction(sh, 1);
    cpSpaceAddShape(sc->space, sh);
    sc->shape[sc->nshape++] = sh;
}

/* The header's first line, and the closed box: walls 10 thick outside it. */
static void world(scene *sc, double gravity, double damp, double dt)
{
    sc->w = q1(unif(sc, 60, 100));
    sc->h = q1(unif(sc, 40, 70));
    sc->g = q1(gravity);
    damp = q2(damp);
    cpSpaceSetGravity(sc->space, cpv(0, sc->g));
    cpSpaceSetDamping(sc->space, damp);
    double w = sc->w, h = sc->h, t = 5;
    add_static(sc, cpv(-t, -t), cpv(w + t, -t), t);
    add_static(sc, cpv(-t, h + t), cpv(w + t, h + t), t);
    add_static(sc, cpv(-t, -t), cpv(-t, h + t), t);
    add_static(sc, cpv(w + t, -t), cpv(w + t, h + t), t);
    putf(sc->out, "world ");
    putn(sc->out, w, 1);
    putf(sc->out, " ");
    putn(sc->out, h, 1);
    putf(sc->out, " g ");
    putn(sc->out, sc->g, 1);
    putf(sc->out, " damp ");
    putn(sc->out, damp, 2);
    putf(sc->out, " dt %g\n", dt);
}

static void wall(scene *sc, cpVect a, cpVect b)
{
    a = qv(a), b = qv(b);
    add_static(sc, a, b, WALL_R);
    putf(sc->out, "wall ");
    putv(sc->out, a);
    putf(sc->out, " ");
    putv(sc->out, b);
    putf(sc->out, "\n");
}

/* The central force's velocity update: gravity replaced by k (center - p). */
static void central_velocity(cpBody *b, cpVect gravity, cpFloat damping, cpFloat dt)
{
    const scene *sc = cpBodyGetUserData(b);
    (void)gravity;
    cpBodyUpdateVelocity(b, cpvmult(cpvsub(sc->center, cpBodyGetPosition(b)), sc->k),
                         damping, dt);
}

static void central(scene *sc, cpVect c, double k)
{
    sc->center = qv(c);
    sc->k = q2(k);
    putf(sc->out, "center ");
    putv(sc->out, sc->center);
    putf(sc->out, " k ");
    putn(sc->out, sc->k, 2);
    putf(sc->out, "\n");
}

/* A dynamic body with its shape; writes the rest of its header line. The
 * mass is at least 0.1 (what the header can print). */
static cpBody *body(scene *sc, cpShape *(*mk)(cpBody *, double, double), double a, double b,
                    double moment, double m, double e, double f, cpVect p, cpVect v, double deg)
{
    if (sc->n == GK_PHYS_MAX_OBJECTS)
        gk_die("physgen: more than %d objects", GK_PHYS_MAX_OBJECTS);
    cpBody *bd = cpBodyNew(m, moment);
    cpBodySetPosition(bd, p);
    cpBodySetVelocity(bd, v);
    cpBodySetAngle(bd, deg * M_PI / 180);
    cpBodySetUserData(bd, sc);
    if (sc->k > 0)
        cpBodySetVelocityUpdateFunc(bd, central_velocity);
    cpSpaceAddBody(sc->space, bd);
    cpShape *sh = mk(bd, a, b);
    cpShapeSetElasticity(sh, e);
    cpShapeSetFriction(sh, f);
    cpSpaceAddShape(sc->space, sh);
    sc->body[sc->n++] = bd;
    sc->shape[sc->nshape++] = sh;
    putf(sc->out, " m");
    putn(sc->out, m, 1);
    putf(sc->out, " e");
    putn(sc->out, e, 2);
    putf(sc->out, " f");
    putn(sc->out, f, 2);
    putf(sc->out, " p");
    putv(sc->out, p);
    putf(sc->out, " v");
    putv(sc->out, v);
    putf(sc->out, "\n");
    return bd;
}

static cpShape *mk_circle(cpBody *b, double r, double unused)
{
    (void)unused;
    return cpCircleShapeNew(b, r, cpvzero);
}

static cpShape *mk_box(cpBody *b, double w, double h)
{
    return cpBoxShapeNew(b, w, h, 0);
}

static cpBody *circle(scene *sc, double r, double m, double e, double f, cpVect p, cpVect v)
{
    r = fmax(q1(r), 0.3), m = fmax(q1(m), 0.1), e = q2(e), f = q2(f), p = qv(p), v = qv(v);
    putf(sc->out, "o%d circle r", sc->n);
    putn(sc->out, r, 1);
    return body(sc, mk_circle, r, 0, cpMomentForCircle(m, 0, r, cpvzero), m, e, f, p, v, 0);
}

/* A box W x H turned DEG degrees (counter-clockwise) about its centre. */
static cpBody *box(scene *sc, double w, double h, double deg, double m, double e, double f,
                   cpVect p, cpVect v)
{
    w = fmax(q1(w), 0.3), h = fmax(q1(h), 0.3), deg = round(deg);
    m = fmax(q1(m), 0.1), e = q2(e), f = q2(f), p = qv(p), v = qv(v);
    putf(sc->out, "o%d box w", sc->n);
    putn(sc->out, w, 1);
    putf(sc->out, " h");
    putn(sc->out, h, 1);
    putf(sc->out, " a%.0f", deg);
    return body(sc, mk_box, w, h, cpMomentForBox(m, w, h), m, e, f, p, v, deg);
}

static void joint(scene *sc, cpConstraint *c)
{
    cpSpaceAddConstraint(sc->space, c);
    sc->joint[sc->njoint++] = c;
}

/* A rod from object I's centre to the fixed point A (its length is kept). */
static void pin(scene *sc, int i, cpVect a)
{
    a = qv(a);
    joint(sc, cpPinJointNew(cpSpaceGetStaticBody(sc->space), sc->body[i], a, cpvzero));
    putf(sc->out, "pin o%d ", i);
    putv(sc->out, a);
    putf(sc->out, "\n");
}

/* Object I turns freely about the fixed point A (the point moves with it). */
static void pivot(scene *sc, int i, cpVect a)
{
    a = qv(a);
    joint(sc, cpPivotJointNew2(cpSpaceGetStaticBody(sc->space), sc->body[i], a,
                               cpBodyWorldToLocal(sc->body[i], a)));
    putf(sc->out, "pivot o%d ", i);
    putv(sc->out, a);
    putf(sc->out, "\n");
}

/* N spots in [x0,x1] x [y0,y1], one to a cell of a shuffled grid, jittered;
 * returns the largest radius that keeps any two spots' circles apart after
 * the header's rounding. */
static double grid(scene *sc, double x0, double y0, double x1, double y1, int n, cpVect *out)
{
    double aw = x1 - x0, ah = y1 - y0;
    int cols = (int)ceil(sqrt(n * aw / ah));
    cols = cols < 1 ? 1 : cols > n ? n : cols;
    int rows = (n + cols - 1) / cols, cells = cols * rows;
    int idx[2 * GK_PHYS_MAX_OBJECTS] = {0}; /* cells >= n, which cppcheck cannot see */
    for (int i = 0; i < cells; i++)
        idx[i] = i;
    for (int i = cells - 1; i > 0; i--) {
        int j = randint(sc, 0, i), t = idx[i];
        idx[i] = idx[j], idx[j] = t;
    }
    double cw = aw / cols, ch = ah / rows;
    for (int i = 0; i < n; i++)
        out[i] = cpv(x0 + (idx[i] % cols + 0.5 + unif(sc, -0.1, 0.1)) * cw,
                     y0 + (idx[i] / cols + 0.5 + unif(sc, -0.1, 0.1)) * ch);
    return 0.4 * fmin(cw, ch) - 0.2;
}

/* The point T along the segment A->B, lifted L along its upward normal. */
static cpVect along(cpVect a, cpVect b, double t, double l)
{
    cpVect u = cpvnormalize(cpvsub(b, a));
    cpVect nrm = cpv(-u.y, u.x);
    if (nrm.y < 0)
        nrm = cpvneg(nrm);
    return cpvadd(cpvadd(a, cpvmult(u, t)), cpvmult(nrm, l));
}

/* ---- the scenario types ---- */

static double gravity(scene *sc) { return -unif(sc, 8, 25); }

/* Balls of modest radius in the region, their mass their area times a density. */
static void balls(scene *sc, int n, double x0, double y0, double x1, double y1, double rcap,
                  double e0, double e1, double vmax)
{
    cpVect p[GK_PHYS_MAX_OBJECTS];
    double rmax = fmin(grid(sc, x0, y0, x1, y1, n, p), rcap);
    for (int i = 0; i < n; i++) {
        double r = unif(sc, 0.6, 1) * rmax;
        circle(sc, r, r * r * unif(sc, 0.5, 2), unif(sc, e0, e1), unif(sc, 0.2, 0.8), p[i],
               cpv(unif(sc, -vmax, vmax), unif(sc, -vmax, vmax)));
    }
}

static void falling_balls(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    balls(sc, n, 3, sc->h * 0.4, sc->w - 3, sc->h - 3, 3, 0.1, 0.4, 0);
}

static void bouncing_balls(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    balls(sc, n, 3, sc->h * 0.3, sc->w - 3, sc->h - 3, 3, 0.75, 0.95, 15);
}

/* Columns of boxes resting on each other, each a little off the one below. */
static void box_stack(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    int cols = 1 + (n - 1) / 5;
    for (int c = 0; c < cols; c++) {
        double x = sc->w * (c + 1) / (cols + 1), base = 0;
        for (int i = c; i < n; i += cols) {
            double bw = q1(unif(sc, 4, 8)), bh = q1(unif(sc, 2, 5));
            /* Rounded up, so a box never starts inside the one below. */
            double y = q1(base + bh / 2 + 0.05);
            box(sc, bw, bh, 0, bw * bh * unif(sc, 0.08, 0.12), 0.1, unif(sc, 0.5, 0.9),
                cpv(x + unif(sc, -0.15, 0.15) * bw, y), cpvzero);
            base = y + bh / 2;
        }
    }
}

/* Objects placed along a static segment A->B (rows of PER, each row LIFT
 * higher, the first just above the surface); circles when ROUND. */
static void on_segment(scene *sc, int n, cpVect a, cpVect b, int round_, double size, double f0,
                       double f1)
{
    double len = cpvlength(cpvsub(b, a));
    /* Small enough that three rows hold them all, so the top row stays low. */
    size = fmax(0.5, fmin(size, ((len - 2) / ((n + 2) / 3) - 1) / 2));
    double step = 2 * size + 1;
    int per = (int)((len - 2) / step);
    per = per < 1 ? 1 : per;
    double deg = atan2(b.y - a.y, b.x - a.x) * 180 / M_PI;
    if (deg > 90 || deg < -90) /* a box lies along the slope, either way round */
        deg += deg > 0 ? -180 : 180;
    for (int i = 0; i < n; i++) {
        int row = i / per;
        double t = 1 + step * (i % per + 0.5), e = unif(sc, 0.05, 0.3), f = unif(sc, f0, f1);
        if (round_) {
            double r = q1(size * unif(sc, 0.6, 1));
            cpVect p = along(a, b, t, WALL_R + r + 0.2 + row * 2.5 * size);
            circle(sc, r, r * r * unif(sc, 0.5, 2), e, f, p, cpvzero);
        } else {
            double bw = q1(size * unif(sc, 0.8, 1.2)), bh = q1(size * unif(sc, 0.5, 0.9));
            cpVect p = along(a, b, t, WALL_R + bh / 2 + 0.2 + row * 2.5 * size);
            box(sc, bw, bh, deg, bw * bh * unif(sc, 0.1, 0.3), e, f, p, cpvzero);
        }
    }
}

/* Boxes on one ramp: those whose friction is below the slope's tangent slide. */
static void ramp_slide(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    cpVect a = qv(cpv(2, sc->h * unif(sc, 0.45, 0.65))), b = qv(cpv(sc->w * unif(sc, 0.55, 0.75), 2));
    wall(sc, a, b);
    on_segment(sc, n, a, b, 0, unif(sc, 1.5, 2.5), 0.05, 0.8);
}

/* Balls rolling down two slopes in a zigzag, the second below the end of the
 * first. */
static void slope_roll(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    cpVect a = qv(cpv(2, sc->h * unif(sc, 0.75, 0.85))), b = qv(cpv(sc->w * 0.75, sc->h * 0.55));
    wall(sc, a, b);
    wall(sc, cpv(sc->w - 2, sc->h * 0.45), cpv(sc->w * 0.25, sc->h * unif(sc, 0.15, 0.25)));
    on_segment(sc, n, a, b, 1, unif(sc, 0.8, 1.6), 0.5, 0.9);
}

/* Bobs on rods from anchors spread under the ceiling, let go at an angle. */
static void pendulum(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    double gap = sc->w / (n + 1), r = fmin(1.5, 0.3 * gap), top = sc->h - 2;
    cpVect anchor[GK_PHYS_MAX_OBJECTS], p[GK_PHYS_MAX_OBJECTS];
    for (int i = 0; i < n; i++) {
        anchor[i] = qv(cpv(gap * (i + 1), top));
        /* Draw until the bob is clear of the walls and of the bobs before it;
         * hanging straight down is always clear (bobs are under 0.6 gap wide). */
        int tries = 0, clear;
        do {
            double l = unif(sc, 0.3, 0.7) * (top - 2), th = unif(sc, 15, 60) * M_PI / 180;
            if (++tries > 30)
                th = 0;
            else if (randint(sc, 0, 1))
                th = -th;
            p[i] = qv(cpvadd(anchor[i], cpv(l * sin(th), -l * cos(th))));
            clear = p[i].x > r + 1 && p[i].x < sc->w - r - 1;
            for (int j = 0; j < i && clear; j++)
                clear = cpvdist(p[i], p[j]) > 2 * r + 0.5;
        } while (!clear && tries <= 30);
    }
    for (int i = 0; i < n; i++)
        circle(sc, r, unif(sc, 0.5, 3), unif(sc, 0.5, 0.9), 0.2, p[i], cpvzero);
    for (int i = 0; i < n; i++)
        pin(sc, i, anchor[i]);
}

/* Two-body collisions without gravity, seen from above: pairs of balls in
 * lanes, heading at each other, a little off centre; an odd one out heads for
 * the wall. */
static void collision(scene *sc, int n, double dt)
{
    world(sc, 0, 1, dt);
    int lanes = (n + 1) / 2;
    double gap = sc->h / (lanes + 1), rmax = fmin(3, 0.35 * gap);
    for (int i = 0; i < n; i++) {
        int lane = i / 2, right = i % 2;
        double r = unif(sc, 0.6, 1) * rmax, y = gap * (lane + 1);
        double x = right ? sc->w * unif(sc, 0.7, 0.9) : sc->w * unif(sc, 0.1, 0.3);
        if (right)
            y += unif(sc, -0.5, 0.5) * r;
        double v = unif(sc, 5, 20) * (right ? -1 : 1);
        circle(sc, r, unif(sc, 0.5, 5), unif(sc, 0.5, 1), 0.2, cpv(x, y), cpv(v, 0));
    }
}

/* A cue ball into a triangle rack, on a table whose damping slows them. */
static void billiards(scene *sc, int n, double dt)
{
    world(sc, 0, unif(sc, 0.5, 0.8), dt);
    double r = q1(unif(sc, 1.2, 1.8)), e = unif(sc, 0.85, 0.95), d = 2 * r + 0.1;
    cpVect apex = cpv(sc->w * 0.55, sc->h / 2);
    double th = unif(sc, -2, 2) * M_PI / 180, speed = unif(sc, 40, 80);
    circle(sc, r, 1, e, 0.1, cpv(sc->w * 0.2, sc->h / 2 + unif(sc, -0.5, 0.5)),
           cpv(speed * cos(th), speed * sin(th)));
    for (int row = 0, i = 1; i < n; row++)
        for (int j = 0; j <= row && i < n; j++, i++)
            circle(sc, r, 1, e, 0.1, cpvadd(apex, cpv(row * d * 0.87, (j - row / 2.0) * d)),
                   cpvzero);
}

/* Balls around a centre that pulls them back in proportion to distance, as a
 * spring would: started at most at the circular speed, none ever gets further
 * out than it started until it hits another. */
static void orbit(scene *sc, int n, double dt)
{
    world(sc, 0, 1, dt);
    central(sc, cpv(sc->w / 2, sc->h / 2), unif(sc, 0.5, 2));
    double om = sqrt(sc->k), rmax = fmin(sc->w, sc->h) / 2 - 3;
    cpVect p[GK_PHYS_MAX_OBJECTS];
    double r[GK_PHYS_MAX_OBJECTS];
    for (int i = 0; i < n; i++) {
        int clear = 0;
        for (int tries = 0; tries < 100 && !clear; tries++) {
            double d = unif(sc, 4, rmax), a = unif(sc, 0, 2 * M_PI);
            r[i] = q1(unif(sc, 0.5, 1.2));
            p[i] = qv(cpvadd(sc->center, cpv(d * cos(a), d * sin(a))));
            clear = 1;
            for (int j = 0; j < i && clear; j++)
                clear = cpvdist(p[i], p[j]) > r[i] + r[j] + 0.3;
        }
        cpVect t = cpvperp(cpvnormalize(cpvsub(p[i], sc->center)));
        double v = om * cpvdist(p[i], sc->center) * unif(sc, 0.5, 1) * (randint(sc, 0, 1) ? 1 : -1);
        circle(sc, r[i], unif(sc, 0.5, 3), unif(sc, 0.5, 0.9), 0.2, p[i], cpvmult(t, v));
    }
}

/* A row of dominoes; the first leans far enough past its corner to fall. */
static void dominoes(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    double h = unif(sc, 6, 10), x0 = 5;
    if (n > 1 && x0 + (n - 1) * 0.6 * h > sc->w - 8)
        h = (sc->w - 8 - x0) / ((n - 1) * 0.6);
    h = q1(h);
    double w = q1(fmax(0.3, h / 6)), s = 0.6 * h, f = unif(sc, 0.4, 0.8);
    double tilt = -round(unif(sc, 12, 25)), th = tilt * M_PI / 180;
    /* Its bottom-right corner on the floor; centre rounded up off it. */
    cpVect c = cpvadd(cpv(x0 + w / 2, 0.05), cpvrotate(cpvforangle(th), cpv(-w / 2, h / 2)));
    box(sc, w, h, tilt, w * h * 0.2, 0.1, f, c, cpvzero);
    for (int i = 1; i < n; i++)
        box(sc, w, h, 0, w * h * 0.2, 0.1, f, cpv(x0 + i * s, h / 2 + 0.05), cpvzero);
}

/* Balls dropped into a V of two walls with a gap at the bottom. */
static void funnel(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    cpVect p[GK_PHYS_MAX_OBJECTS];
    double rmax = fmin(grid(sc, sc->w * 0.15, sc->h * 0.75, sc->w * 0.85, sc->h - 2, n, p), 2.5);
    double gap = unif(sc, 2.2, 4) * rmax, mid = sc->w / 2, low = sc->h * 0.35;
    wall(sc, cpv(sc->w * 0.1, sc->h * 0.7), cpv(mid - gap / 2 - WALL_R, low));
    wall(sc, cpv(sc->w * 0.9, sc->h * 0.7), cpv(mid + gap / 2 + WALL_R, low));
    for (int i = 0; i < n; i++) {
        double r = unif(sc, 0.6, 1) * rmax;
        circle(sc, r, r * r * unif(sc, 0.5, 2), unif(sc, 0.2, 0.5), unif(sc, 0.2, 0.6), p[i],
               cpvzero);
    }
}

/* A plank on a pivot (o0) with balls and boxes of unequal mass dropped on it. */
static void seesaw(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    double len = q1(unif(sc, 0.4, 0.6) * sc->w);
    cpVect at = qv(cpv(sc->w / 2, unif(sc, 4, 8)));
    box(sc, len, 1, 0, len * unif(sc, 0.1, 0.3), 0.2, 0.6, at, cpvzero);
    if (n > 1) {
        cpVect p[GK_PHYS_MAX_OBJECTS];
        double rmax = fmin(grid(sc, at.x - len / 2 + 1, at.y + 4, at.x + len / 2 - 1, sc->h - 2,
                                n - 1, p),
                           2.5);
        for (int i = 0; i < n - 1; i++) {
            double r = unif(sc, 0.6, 1) * rmax, m = unif(sc, 0.5, 8), e = unif(sc, 0.1, 0.4);
            if (randint(sc, 0, 1))
                circle(sc, r, m, e, 0.5, p[i], cpvzero);
            else /* a square whose half-diagonal is under r */
                box(sc, 1.4 * r, 1.4 * r, 0, m, e, 0.5, p[i], cpvzero);
        }
    }
    pivot(sc, 0, at);
}

/* Balls thrown up and to the right from the lower left. */
static void projectile(scene *sc, int n, double dt)
{
    world(sc, gravity(sc), 1, dt);
    cpVect p[GK_PHYS_MAX_OBJECTS];
    double rmax = fmin(grid(sc, 2, 2, sc->w * 0.35, sc->h * 0.4, n, p), 2);
    for (int i = 0; i < n; i++) {
        double r = unif(sc, 0.6, 1) * rmax, v = unif(sc, 15, 35), a = unif(sc, 20, 75) * M_PI / 180;
        circle(sc, r, r * r * unif(sc, 0.5, 2), unif(sc, 0.3, 0.6), unif(sc, 0.3, 0.6), p[i],
               cpv(v * cos(a), v * sin(a)));
    }
}

/* Held-out types reuse the trained ones' pieces in new arrangements: billiards
 * are collisions with damping, a funnel is falling balls on ramps, a seesaw a
 * pivot (a pendulum's pin, turned) under falling objects. */
static const struct {
    const char *name;
    int heldout;
    void (*build)(scene *, int, double);
} types[] = {
    {"falling_balls", 0, falling_balls}, {"bouncing_balls", 0, bouncing_balls},
    {"box_stack", 0, box_stack},         {"ramp_slide", 0, ramp_slide},
    {"slope_roll", 0, slope_roll},       {"pendulum", 0, pendulum},
    {"collision", 0, collision},         {"orbit", 0, orbit},
    {"dominoes", 0, dominoes},           {"projectile", 0, projectile},
    {"billiards", 1, billiards},         {"funnel", 1, funnel},
    {"seesaw", 1, seesaw},
};
enum { NTYPES = sizeof types / sizeof types[0] };

int gk_phys_ntypes(void) { return NTYPES; }
const char *gk_phys_type_name(int type) { return types[type].name; }
int gk_phys_heldout(int type) { return types[type].heldout; }

int gk_phys_find(const char *name)
{
    for (int t = 0; t < NTYPES; t++)
        if (!strcmp(types[t].name, name))
            return t;
    return -1;
}

/* Debian's libchipmunk is a debug build: the first cpSpaceNew() of a process
 * prints two lines on stdout, where our scenes go. Make that first one here,
 * with stdout pointed at /dev/null. */
static void hush_chipmunk(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    fflush(stdout);
    int saved = dup(1), null = open("/dev/null", O_WRONLY);
    if (saved >= 0 && null >= 0)
        dup2(null, 1);
    cpSpaceFree(cpSpaceNew());
    fflush(stdout);
    if (saved >= 0 && null >= 0)
        dup2(saved, 1);
    if (saved >= 0)
        close(saved);
    if (null >= 0)
        close(null);
}

void gk_phys_run(int type, uint64_t seed, uint64_t index, const gk_phys_opts *o,
                 gk_phys_scene *s)
{
    hush_chipmunk();
    scene sc = {.out = s};
    uint64_t st = seed, mixed = splitmix64(&st) + index;
    sc.rng = splitmix64(&mixed);
    sc.space = cpSpaceNew();
    /* Stacks and rows of dominoes need more than the default 10 iterations
     * to rest without creeping. */
    cpSpaceSetIterations(sc.space, 20);
    if (!s->text) {
        s->cap = 4096;
        s->text = gk_malloc(s->cap);
    }
    s->len = 0;
    s->text[0] = 0;
    int n = randint(&sc, o->min_obj, o->max_obj);
    types[type].build(&sc, n, o->dt);

    s->world[0] = sc.w, s->world[1] = sc.h;
    s->nobj = sc.n, s->nframes = o->frames;
    size_t m = (size_t)o->frames * (size_t)sc.n * 2;
    s->pos = gk_realloc(s->pos, (m ? m : 1) * sizeof *s->pos);
    s->vel = gk_realloc(s->vel, (m ? m : 1) * sizeof *s->vel);
    double h = o->dt / o->substeps;
    for (int f = 0; f < o->frames; f++) {
        for (int k = 0; k < o->substeps; k++)
            cpSpaceStep(sc.space, h);
        double vmax = 0;
        double *p = s->pos + (size_t)f * sc.n * 2, *v = s->vel + (size_t)f * sc.n * 2;
        for (int i = 0; i < sc.n; i++) {
            cpVect bp = cpBodyGetPosition(sc.body[i]), bv = cpBodyGetVelocity(sc.body[i]);
            p[2 * i] = bp.x, p[2 * i + 1] = bp.y;
            v[2 * i] = bv.x, v[2 * i + 1] = bv.y;
            vmax = fmax(vmax, cpvlength(bv));
        }
        putf(s, "Frame %d: %s\n", f + 1,
             vmax >= GK_PHYS_MOVING ? "moving" : vmax >= GK_PHYS_SETTLING ? "settling" : "resting");
        for (int i = 0; i < sc.n; i++) {
            putf(s, "o%d ", i);
            putv(s, cpv(p[2 * i], p[2 * i + 1]));
            putf(s, " ");
            putv(s, cpv(v[2 * i], v[2 * i + 1]));
            putf(s, "\n");
        }
    }
    /* The space first: freeing it wakes its bodies, which must still exist. */
    cpSpaceFree(sc.space);
    for (int i = 0; i < sc.njoint; i++)
        cpConstraintFree(sc.joint[i]);
    for (int i = 0; i < sc.nshape; i++)
        cpShapeFree(sc.shape[i]);
    for (int i = 0; i < sc.n; i++)
        cpBodyFree(sc.body[i]);
}

void gk_phys_scene_free(gk_phys_scene *s)
{
    free(s->text);
    free(s->pos);
    free(s->vel);
    memset(s, 0, sizeof *s);
}
