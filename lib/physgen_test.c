/* physgen_test: the scenario types and the simulation behind phys-gen.
 *
 * Every type runs with 1 and with 20 objects, and its text is read back by the
 * grammar of phys-gen(1): the header names the world and each object, there is
 * one `Frame N:` block per frame with one line per object, the printed numbers
 * are the truth rounded, the state keyword follows the speed thresholds, and
 * every centre stays inside the world. Then the physics: a dropped ball falls,
 * a bouncing ball never gains energy, a pendulum keeps its rod's length, an
 * orbiting ball never gets further out than it started; and determinism: the
 * same seed and index give the same bytes, whatever ran before. */
#include "physgen.h"
#include "tap.h"

static const gk_phys_opts opts30 = {.frames = 30, .dt = 0.05, .substeps = 10, .min_obj = 1,
                                    .max_obj = 20};

static gk_phys_opts with_objects(int n, int frames)
{
    gk_phys_opts o = opts30;
    o.min_obj = o.max_obj = n, o.frames = frames;
    return o;
}

/* The line of TEXT that starts with PREFIX, or NULL. */
static const char *line_of(const char *text, const char *prefix)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
        if (!strncmp(p, prefix, strlen(prefix)))
            return p;
    return NULL;
}

/* The text of scene S read back by the grammar; 0 when it conforms, else a
 * line number (or -1) where it first does not. */
static int check_grammar(const gk_phys_scene *s, double *g)
{
    const char *p = s->text;
    int line = 1, objects = 0, frame = 0;
    double w, h, damp, dt;
    if (sscanf(p, "world %lf %lf g %lf damp %lf dt %lf\n", &w, &h, g, &damp, &dt) != 5 ||
        w != s->world[0] || h != s->world[1])
        return line;
    if (!s->len || s->text[s->len - 1] != '\n' || strstr(s->text, "\n\n"))
        return -1;
    for (p = strchr(p, '\n') + 1; *p; p = strchr(p, '\n') + 1) {
        line++;
        int id, k;
        char word[16];
        double x, y, vx, vy;
        if (!strncmp(p, "Frame ", 6)) {
            char state[16];
            if (sscanf(p, "Frame %d: %15s", &k, state) != 2 || k != ++frame)
                return line;
            double vmax = 0;
            for (int i = 0; i < s->nobj; i++) {
                const double *v = s->vel + ((size_t)(k - 1) * s->nobj + i) * 2;
                vmax = fmax(vmax, hypot(v[0], v[1]));
            }
            const char *want = vmax >= GK_PHYS_MOVING     ? "moving"
                               : vmax >= GK_PHYS_SETTLING ? "settling"
                                                          : "resting";
            if (strcmp(state, want))
                return line;
        } else if (frame) {
            if (sscanf(p, "o%d %lf,%lf %lf,%lf", &id, &x, &y, &vx, &vy) != 5 ||
                id >= s->nobj)
                return line;
            const double *q = s->pos + ((size_t)(frame - 1) * s->nobj + id) * 2;
            const double *v = s->vel + ((size_t)(frame - 1) * s->nobj + id) * 2;
            if (fabs(x - q[0]) > 0.051 || fabs(y - q[1]) > 0.051 || fabs(vx - v[0]) > 0.051 ||
                fabs(vy - v[1]) > 0.051)
                return line;
        } else if (sscanf(p, "o%d %15s", &id, word) == 2) {
            if (id != objects++ || (strcmp(word, "circle") && strcmp(word, "box")))
                return line;
        } else if (strncmp(p, "wall ", 5) && strncmp(p, "center ", 7) &&
                   strncmp(p, "pin o", 5) && strncmp(p, "pivot o", 7)) {
            return line;
        }
    }
    return objects == s->nobj && frame == s->nframes ? 0 : -1;
}

/* Every centre finite and inside the world. */
static int inside(const gk_phys_scene *s)
{
    for (size_t i = 0; i < (size_t)s->nframes * s->nobj; i++) {
        double x = s->pos[2 * i], y = s->pos[2 * i + 1];
        if (!isfinite(x) || !isfinite(y) || x < 0 || x > s->world[0] || y < 0 ||
            y > s->world[1])
            return 0;
    }
    return 1;
}

int main(void)
{
    int nt = gk_phys_ntypes(), held = 0;
    for (int t = 0; t < nt; t++)
        held += gk_phys_heldout(t);
    ok(nt >= 12 && held == 3, "%d types, %d of them held out", nt, held);
    int found = 1;
    for (int t = 0; t < nt; t++)
        found &= gk_phys_find(gk_phys_type_name(t)) == t;
    ok(found && gk_phys_find("nope") == -1, "every type is found by its name, once");

    gk_phys_scene s = {0}, r = {0};
    for (int t = 0; t < nt; t++) {
        for (int n = 1; n <= 20; n += 19) {
            gk_phys_opts o = with_objects(n, 30);
            int bad = 0, out = 1;
            double g;
            for (uint64_t k = 0; k < 3; k++) {
                gk_phys_run(t, 7, k, &o, &s);
                if (s.nobj != n || s.nframes != 30 || (bad = check_grammar(&s, &g)) != 0)
                    break;
                out &= inside(&s);
            }
            ok(s.nobj == n && s.nframes == 30 && !bad && out,
               "%s, %d objects: 30 frames by the grammar (first bad line %d), inside the world",
               gk_phys_type_name(t), n, bad);
        }
    }

    /* Determinism: the same scene after others, in a reused buffer, and fresh. */
    int same = 1, differ = 0;
    for (int t = 0; t < nt; t++) {
        gk_phys_run(t, 11, 5, &opts30, &s);
        gk_phys_scene_free(&r);
        gk_phys_run(t, 11, 4, &opts30, &r);
        differ += strcmp(s.text, r.text) != 0;
        gk_phys_run(t, 11, 5, &opts30, &r);
        same &= s.len == r.len && !memcmp(s.text, r.text, s.len) &&
                !memcmp(s.pos, r.pos, sizeof *s.pos * 2 * s.nobj * s.nframes);
    }
    ok(same, "every type: seed and index give the same text and truth, bit for bit");
    ok(differ == nt, "every type: another index gives another scene");

    /* One falling ball: straight down, faster each frame, until it lands. */
    gk_phys_opts one = with_objects(1, 60), longer = with_objects(1, 120);
    int t = gk_phys_find("falling_balls"), falls = 1;
    gk_phys_run(t, 3, 0, &longer, &s);
    double x0, y0, g;
    sscanf(line_of(s.text, "o0 circle"), "o0 circle r%*f m%*f e%*f f%*f p%lf,%lf", &x0, &y0);
    check_grammar(&s, &g);
    for (int f = 0; f < 4; f++) {
        double y = s.pos[2 * f + 1], vy = s.vel[2 * f + 1], prev = f ? s.pos[2 * f - 1] : y0;
        falls &= y < prev && s.pos[2 * f] == x0 && fabs(vy - g * 0.05 * (f + 1)) < 1e-6;
    }
    ok(falls, "a falling ball: y decreases, x stays, vy = g t");
    ok(!strncmp(line_of(s.text, "Frame 120:"), "Frame 120: resting", 18),
       "and it bounces to rest within 6 seconds");

    /* A bouncing ball: kinetic plus potential energy never above its start. */
    int gains = 0;
    t = gk_phys_find("bouncing_balls");
    for (uint64_t k = 0; k < 5; k++) {
        double vx0, vy0;
        gk_phys_run(t, 5, k, &one, &s);
        check_grammar(&s, &g);
        sscanf(line_of(s.text, "o0 circle"), "o0 circle r%*f m%*f e%*f f%*f p%lf,%lf v%lf,%lf",
               &x0, &y0, &vx0, &vy0);
        double e0 = 0.5 * (vx0 * vx0 + vy0 * vy0) - g * y0;
        for (int f = 0; f < s.nframes; f++) {
            const double *v = s.vel + 2 * f;
            gains += 0.5 * (v[0] * v[0] + v[1] * v[1]) - g * s.pos[2 * f + 1] > e0 * 1.01;
        }
    }
    ok(!gains, "bouncing balls never gain more than 1%% energy (%d frames did)", gains);

    /* A pendulum keeps its rod; an orbit stays within its starting radius. */
    double ax, ay, worst = 0;
    t = gk_phys_find("pendulum");
    for (uint64_t k = 0; k < 5; k++) {
        gk_phys_run(t, 9, k, &one, &s);
        sscanf(line_of(s.text, "o0 circle"), "o0 circle r%*f m%*f e%*f f%*f p%lf,%lf", &x0, &y0);
        sscanf(line_of(s.text, "pin o0 "), "pin o0 %lf,%lf", &ax, &ay);
        double l = hypot(x0 - ax, y0 - ay);
        for (int f = 0; f < s.nframes; f++)
            worst = fmax(worst, fabs(hypot(s.pos[2 * f] - ax, s.pos[2 * f + 1] - ay) - l) / l);
    }
    ok(worst < 0.005, "a pendulum's rod keeps its length within 0.5%% (worst %.5f)", worst);
    worst = 0;
    t = gk_phys_find("orbit");
    for (uint64_t k = 0; k < 5; k++) {
        double cx, cy;
        gk_phys_run(t, 9, k, &one, &s);
        sscanf(line_of(s.text, "o0 circle"), "o0 circle r%*f m%*f e%*f f%*f p%lf,%lf", &x0, &y0);
        sscanf(line_of(s.text, "center "), "center %lf,%lf", &cx, &cy);
        double r0 = hypot(x0 - cx, y0 - cy);
        for (int f = 0; f < s.nframes; f++)
            worst = fmax(worst, hypot(s.pos[2 * f] - cx, s.pos[2 * f + 1] - cy) - r0);
    }
    ok(worst < 0.01, "an orbiting ball never gets further out than it started (by %.4f)", worst);

    gk_phys_scene_free(&s);
    gk_phys_scene_free(&r);
    return tap_done();
}
