/* physgen: 2D rigid-body scenes simulated with Chipmunk2D and written as text
 * for a language model to learn, with the exact trajectories beside them for a
 * rollout scorer (phys-gen(1) has the grammar).
 *
 * A scene is a type (falling balls, a pendulum, dominoes, ...), a seed and an
 * index. gk_phys_run() draws the scene's world and objects from a generator
 * seeded by splitmix64 of seed and index alone, so scene k is the same
 * whatever else is generated, simulates it with a fixed step (Chipmunk is
 * deterministic single-threaded), and writes the header and one `Frame N:`
 * block per frame into a text buffer. Every number in the header is rounded to
 * the precision it is printed with before the simulation starts, so the text
 * describes exactly the world that was simulated; frame lines are rounded for
 * printing only, and the truth arrays keep full double precision. */
#ifndef GK_PHYSGEN_H
#define GK_PHYSGEN_H

#include <stddef.h>
#include <stdint.h>

/* Objects a scene may hold (the dynamic bodies written in every frame). */
#define GK_PHYS_MAX_OBJECTS 20

/* The state keyword of a frame comes from the largest speed of any object
 * (world units per second): at least MOVING is "moving", at least SETTLING is
 * "settling", below it "resting". */
#define GK_PHYS_MOVING 2.0
#define GK_PHYS_SETTLING 0.2

typedef struct {
    int frames;            /* frames written per scene, >= 1 */
    double dt;             /* seconds between frames */
    int substeps;          /* physics steps per frame (each dt / substeps) */
    int min_obj, max_obj;  /* objects per scene, drawn uniformly in [min, max] */
} gk_phys_opts;

typedef struct {
    char *text;              /* NUL-terminated scene text, no blank line inside */
    size_t len, cap;
    double world[2];         /* width and height; the world is [0,w] x [0,h] */
    int nobj, nframes;
    double *pos, *vel;       /* [nframes][nobj][2]: after frame 1..nframes */
} gk_phys_scene;

/* The scenario types, in the order --list prints them. */
int gk_phys_ntypes(void);
const char *gk_phys_type_name(int type);
/* 1 for a held-out type (never in training data), 0 for a trained one. */
int gk_phys_heldout(int type);
/* The index of type NAME, or -1. */
int gk_phys_find(const char *name);

/* Build scene INDEX of TYPE under SEED and simulate it into S (reused across
 * calls: its buffers grow as needed; zero it before the first). */
void gk_phys_run(int type, uint64_t seed, uint64_t index, const gk_phys_opts *o,
                 gk_phys_scene *s);
void gk_phys_scene_free(gk_phys_scene *s);

#endif
