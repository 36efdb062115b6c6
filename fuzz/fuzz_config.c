/* fuzz_config: the config loader (config.c). The input is a config file's
 * contents (config_load_file reads the file, then config_apply_json on the
 * text; here the text directly), then each of its lines as a --set
 * assignment. Checks: an accepted config formats (config_format) and
 * passes the exposure check or refuses it with a reason. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    LtvdConfig cfg;
    char err[512];
    config_defaults(&cfg);
    int rc = config_apply_json(&cfg, text, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    if (rc)
        FUZZ_CHECK(memchr(err, '\0', sizeof err) && err[0]);
    char line[4096];
    config_format(&cfg, line, sizeof line);
    err[0] = '\0';
    int exp = config_check_exposure(&cfg, err, sizeof err);
    FUZZ_CHECK(exp == 0 || (exp == -EPERM && err[0]));
    (void)config_bind_is_loopback(&cfg);

    /* the same bytes as --set section.key=value lines */
    config_defaults(&cfg);
    for (char *p = text, *nl; p && *p; p = nl) {
        nl = strchr(p, '\n');
        if (nl)
            *nl++ = '\0';
        rc = config_apply_set(&cfg, p, err, sizeof err);
        FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    }
    config_format(&cfg, line, sizeof line);
    free(text);
    return 0;
}
