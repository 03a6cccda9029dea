/* config_fuzz: the model config reader, gk_config_apply_file over the
 * defaults then gk_config_check, as moe-train -c reads a config (checkpoints
 * and .qst files carry the same JSON, read by gk_config_apply_text), and
 * gk_config_set on each line of the input as a --set assignment. Each input
 * is written to a file and read; a config that passes the checks must give
 * its parameter counts (gk_config_params: positive, active <= total) and
 * print as JSON that reads back to the same printed config (config.h:
 * applying the printed config gives back the config exactly). */
#include "fuzz.h"
#include "config.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static void check(const gk_config *c)
{
    int64_t total, active;
    gk_config_params(c, &total, &active);
    if (total <= 0 || active <= 0 || active > total)
        fuzz_fail("expected 0 < active <= total parameters, found %lld and %lld",
                  (long long)active, (long long)total);
    char *json = gk_config_to_json(c);
    gk_cleanup_push(free, json);
    gk_config back;
    gk_config_defaults(&back);
    gk_config_apply_text(&back, json, strlen(json), "printed config");
    char *again = gk_config_to_json(&back);
    if (strcmp(json, again) != 0)
        fuzz_fail("expected the printed config to read back the same, found another:\n%s\n%s",
                  json, again);
    free(again);
    gk_cleanup_pop(json);
    free(json);
}

static void from_file(void *arg)
{
    const fuzz_input *in = arg;
    gk_config c;
    gk_config_defaults(&c);
    gk_config_apply_file(&c, fuzz_file(in->data, in->size));
    gk_config_check(&c, "fuzz.json");
    check(&c);
}

/* Each line of the input (NUL-free: a command-line argument cannot hold one). */
static void from_set(void *arg)
{
    const fuzz_input *in = arg;
    gk_config c;
    gk_config_defaults(&c);
    char *text = malloc(in->size + 1);
    gk_cleanup_push(free, text);
    memcpy(text, in->data, in->size);
    text[in->size] = 0;
    for (char *line = text, *nl; line; line = nl ? nl + 1 : NULL) {
        if ((nl = strchr(line, '\n')))
            *nl = 0;
        if (*line)
            gk_config_set(&c, line, "--set");
    }
    gk_cleanup_pop(text);
    free(text);
    gk_config_check(&c, "--set");
    check(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    fuzz_try(from_file, &in);
    if (!memchr(data, 0, size))
        fuzz_try(from_set, &in);
    return 0;
}
