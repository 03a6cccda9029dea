/* phys-gen: 2D rigid-body scenes simulated with Chipmunk2D, written as text
 * for a model to learn (--text) or as JSON lines with the exact trajectories
 * beside the text for moe-rollout --physics to score against (--jsonl, the
 * default). Flags only; the scenes are lib/physgen.c, the grammar phys-gen(1).
 *
 * Scene k takes type k mod (number of chosen types) and its own generator
 * from --seed and k, so the first N scenes of a run are the same whatever
 * --scenes is, and the same flags give the same bytes. */
#include "io.h"
#include "physgen.h"
#include "progress.h"
#include "util.h"

#include <getopt.h>
#include <jv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("usage: phys-gen [options]        simulated 2D scenes as JSON lines or text\n"
           "       phys-gen --list           the scenario types and their split\n"
           "\n"
           "  -n, --scenes N        scenes to write (default 100)\n"
           "  -s, --seed S          seed of every scene (default 1)\n"
           "      --split SPLIT     types of the split: trained (default), heldout, all\n"
           "      --types A,B,...   these types instead (names from --list)\n"
           "      --frames F        frames a scene (default 40)\n"
           "      --dt T            seconds between frames (default 0.05)\n"
           "      --substeps K      physics steps a frame (default 10)\n"
           "      --objects MIN-MAX objects a scene, 1..20 (default 1-20)\n"
           "      --jsonl           one JSON object a scene with its truth (default)\n"
           "      --text            the scenes' text only, separated by a blank line\n"
           "  -o, --output FILE     output file, written atomically (default: standard output)\n"
           "      --list            print each type and its split as JSON lines\n"
           "      --progress        progress even when stderr is not a terminal\n"
           "  -q, --quiet           no progress\n"
           "  -h, --help            this help\n"
           "\n"
           "Exit 0 on success, 1 on failure, 2 on bad usage. See phys-gen(1).\n");
}

/* --types: every name must be a known type; repeats are kept (they weight). */
static int parse_types(const char *s, int *out)
{
    int n = 0;
    char *copy = gk_strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int k = gk_phys_find(t);
        if (k < 0)
            gk_usage("--types: expected type names from --list, found '%s'", t);
        if (n == 64)
            gk_usage("--types: expected at most 64 names, found more");
        out[n++] = k;
    }
    free(copy);
    if (!n)
        gk_usage("--types: expected type names from --list, found '%s'", s);
    return n;
}

static void parse_objects(const char *s, gk_phys_opts *o)
{
    int lo, hi, end = 0;
    if (sscanf(s, "%d-%d%n", &lo, &hi, &end) != 2 || s[end] || lo < 1 || hi < lo ||
        hi > GK_PHYS_MAX_OBJECTS)
        gk_usage("--objects: expected MIN-MAX with 1 <= MIN <= MAX <= %d, found '%s'",
                 GK_PHYS_MAX_OBJECTS, s);
    o->min_obj = lo, o->max_obj = hi;
}

/* One scene as a JSON line: type, split, seed, scene, text, truth. */
static void write_jsonl(gk_out *out, int type, uint64_t seed, uint64_t k, const gk_phys_scene *s)
{
    jv frames = jv_array();
    for (int f = 0; f < s->nframes; f++) {
        jv fr = jv_array();
        for (int i = 0; i < s->nobj; i++) {
            const double *p = s->pos + ((size_t)f * s->nobj + i) * 2;
            fr = jv_array_append(fr, JV_ARRAY(jv_number(p[0]), jv_number(p[1])));
        }
        frames = jv_array_append(frames, fr);
    }
    jv truth = JV_OBJECT(jv_string("world"),
                         JV_ARRAY(jv_number(s->world[0]), jv_number(s->world[1])),
                         jv_string("frames"), frames);
    jv obj = JV_OBJECT(jv_string("type"), jv_string(gk_phys_type_name(type)),
                       jv_string("split"),
                       jv_string(gk_phys_heldout(type) ? "heldout" : "trained"),
                       jv_string("seed"), jv_number((double)seed),
                       jv_string("scene"), jv_number((double)k),
                       jv_string("text"), jv_string_sized(s->text, (int)s->len),
                       jv_string("truth"), truth);
    jv str = jv_dump_string(obj, 0);
    gk_out_write(out, jv_string_value(str), (size_t)jv_string_length_bytes(jv_copy(str)));
    gk_out_write(out, "\n", 1);
    jv_free(str);
}

enum { OPT_SPLIT = 256, OPT_TYPES, OPT_FRAMES, OPT_DT, OPT_SUBSTEPS, OPT_OBJECTS, OPT_JSONL,
       OPT_TEXT, OPT_LIST, OPT_PROGRESS };

int main(int argc, char **argv)
{
    gk_set_prog(argv[0]);
    static const struct option longopts[] = {
        {"scenes", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},
        {"split", required_argument, NULL, OPT_SPLIT},
        {"types", required_argument, NULL, OPT_TYPES},
        {"frames", required_argument, NULL, OPT_FRAMES},
        {"dt", required_argument, NULL, OPT_DT},
        {"substeps", required_argument, NULL, OPT_SUBSTEPS},
        {"objects", required_argument, NULL, OPT_OBJECTS},
        {"jsonl", no_argument, NULL, OPT_JSONL},
        {"text", no_argument, NULL, OPT_TEXT},
        {"output", required_argument, NULL, 'o'},
        {"list", no_argument, NULL, OPT_LIST},
        {"quiet", no_argument, NULL, 'q'},
        {"progress", no_argument, NULL, OPT_PROGRESS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    gk_phys_opts o = {.frames = 40, .dt = 0.05, .substeps = 10, .min_obj = 1,
                      .max_obj = GK_PHYS_MAX_OBJECTS};
    long long scenes = 100;
    uint64_t seed = 1;
    const char *split = NULL, *types_arg = NULL, *path = "-";
    int jsonl = 0, text = 0, list = 0, c;
    opterr = 0; /* one line of ours instead of getopt's and ours */
    while ((c = getopt_long(argc, argv, ":n:s:o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'n': scenes = gk_parse_int("--scenes", optarg, 0, (long long)1 << 40); break;
        /* Seeds stay below 2^53 so the JSON "seed" is exact. */
        case 's': seed = (uint64_t)gk_parse_int("--seed", optarg, 0, (1LL << 53) - 1); break;
        case OPT_SPLIT: split = optarg; break;
        case OPT_TYPES: types_arg = optarg; break;
        case OPT_FRAMES: o.frames = (int)gk_parse_int("--frames", optarg, 1, 100000); break;
        case OPT_DT: o.dt = gk_parse_double("--dt", optarg, 1e-4, 10); break;
        case OPT_SUBSTEPS: o.substeps = (int)gk_parse_int("--substeps", optarg, 1, 10000); break;
        case OPT_OBJECTS: parse_objects(optarg, &o); break;
        case OPT_JSONL: jsonl = 1; break;
        case OPT_TEXT: text = 1; break;
        case 'o': path = optarg; break;
        case OPT_LIST: list = 1; break;
        case 'q': gk_progress_force(-1); break;
        case OPT_PROGRESS: gk_progress_force(1); break;
        case 'h': help(); return 0;
        default: gk_bad_option(c, argv);
        }
    }
    if (optind < argc)
        gk_usage("expected no arguments, found '%s'", argv[optind]);
    if (jsonl && text)
        gk_usage("--jsonl and --text: expected one of them, found both");
    if (split && types_arg)
        gk_usage("--split and --types: expected one of them, found both");
    int ntypes = gk_phys_ntypes();
    if (list) {
        for (int t = 0; t < ntypes; t++) {
            jv obj = JV_OBJECT(jv_string("type"), jv_string(gk_phys_type_name(t)),
                               jv_string("split"),
                               jv_string(gk_phys_heldout(t) ? "heldout" : "trained"));
            jv str = jv_dump_string(obj, 0);
            printf("%s\n", jv_string_value(str));
            jv_free(str);
        }
        return fflush(stdout) ? 1 : 0;
    }

    int chosen[64], nchosen = 0;
    if (types_arg) {
        nchosen = parse_types(types_arg, chosen);
    } else {
        int want; /* 0 trained, 1 held-out, 2 both */
        if (!split || !strcmp(split, "trained"))
            want = 0;
        else if (!strcmp(split, "heldout"))
            want = 1;
        else if (!strcmp(split, "all"))
            want = 2;
        else
            gk_usage("--split: expected trained, heldout or all, found '%s'", split);
        for (int t = 0; t < ntypes; t++)
            if (want == 2 || gk_phys_heldout(t) == want)
                chosen[nchosen++] = t;
    }

    gk_out *out = gk_out_open(path);
    gk_phys_scene s = {0};
    gk_progress pg;
    gk_progress_start(&pg, "phys-gen", "scenes", (uint64_t)scenes);
    for (long long k = 0; k < scenes; k++) {
        int type = chosen[k % nchosen];
        gk_phys_run(type, seed, (uint64_t)k, &o, &s);
        if (text) {
            if (k)
                gk_out_write(out, "\n", 1);
            gk_out_write(out, s.text, s.len);
        } else {
            write_jsonl(out, type, seed, (uint64_t)k, &s);
        }
        gk_progress_update(&pg, (uint64_t)k + 1);
    }
    gk_progress_end(&pg, (uint64_t)scenes);
    gk_phys_scene_free(&s);
    gk_out_commit(out);
    return 0;
}
