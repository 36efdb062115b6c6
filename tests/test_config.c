/* Configuration: defaults, nested JSON, --set, refusals that name the key,
 * and what a reload (SIGHUP) may change: config_diff and the live copy. */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "test_util.h"

static void expect_error(const char *json, const char *needle)
{
    LtvdConfig c;
    char err[256] = "";
    config_defaults(&c);
    ASSERT(config_apply_json(&c, json, err, sizeof err) == -EINVAL);
    if (!strstr(err, needle)) {
        fprintf(stderr, "error '%s' does not mention '%s'\n", err, needle);
        ASSERT(0);
    }
}

int main(void)
{
    LtvdConfig c;
    char err[256];
    config_defaults(&c);
    ASSERT(c.server_port == 8080 && c.model_horizon_days == 182 && c.model_hidden_size == 32);
    ASSERT(c.clock == CLOCK_WALL && c.train_network && c.limits_max_batch_ids == 10000);
    ASSERT(c.limits_max_future_s == 86400);

    ASSERT(config_apply_json(&c,
                             "{\"server\": {\"port\": 9001, \"bind\": \"0.0.0.0\"}, \"clock\": \"event\","
                             " \"model\": {\"horizon_days\": 90}, \"train\": {\"network\": false},"
                             " \"auth\": {\"admin_token\": \"s3cret\"}, \"fallback\": {\"refit_growth\": 0.5}}",
                             err, sizeof err) == 0);
    ASSERT(c.server_port == 9001 && strcmp(c.server_bind, "0.0.0.0") == 0 && c.clock == CLOCK_EVENT);
    ASSERT(c.model_horizon_days == 90 && !c.train_network && strcmp(c.auth_admin_token, "s3cret") == 0);
    ASSERT_NEAR(c.fallback_refit_growth, 0.5, 0);

    ASSERT(config_apply_set(&c, "model.hidden_size=64", err, sizeof err) == 0 && c.model_hidden_size == 64);
    ASSERT(config_apply_set(&c, "clock=wall", err, sizeof err) == 0 && c.clock == CLOCK_WALL);
    ASSERT(config_apply_set(&c, "train.network=true", err, sizeof err) == 0 && c.train_network);
    ASSERT(config_apply_set(&c, "model.hidden_size=100000", err, sizeof err) == -EINVAL);
    ASSERT(strstr(err, "model.hidden_size") && strstr(err, "out of range"));
    ASSERT(config_apply_set(&c, "model.hiden_size=8", err, sizeof err) == -EINVAL);
    ASSERT(strstr(err, "unknown config key 'model.hiden_size'"));
    ASSERT(config_apply_set(&c, "server.port=80x", err, sizeof err) == -EINVAL);
    ASSERT(config_apply_set(&c, "noequals", err, sizeof err) == -EINVAL);
    ASSERT(c.model_hidden_size == 64); /* refused values change nothing */

    expect_error("{\"server\": {\"prot\": 1}}", "server.prot");
    expect_error("{\"bogus\": 1}", "bogus");
    expect_error("{\"server\": {\"port\": \"8080\"}}", "server.port");
    expect_error("{\"server\": {\"port\": 70000}}", "server.port");
    expect_error("{\"server\": {\"port\": 80.5}}", "server.port");
    expect_error("{\"clock\": \"sundial\"}", "clock");
    expect_error("{\"train\": {\"network\": \"yes\"}}", "train.network");
    expect_error("{\"limits\": {\"max_users\": 0}}", "limits.max_users");
    /* the training loss's weight on the mean: 8 by default, 0 allowed (the
     * likelihood alone), negative or absurd refused */
    LtvdConfig w;
    config_defaults(&w);
    ASSERT_NEAR(w.train_mean_loss_weight, 8.0, 0);
    ASSERT(w.train_mean_shrink);
    ASSERT(config_apply_set(&w, "train.mean_shrink=false", err, sizeof err) == 0 && !w.train_mean_shrink);
    expect_error("{\"train\": {\"mean_shrink\": 1}}", "train.mean_shrink");
    ASSERT(config_apply_set(&w, "train.mean_loss_weight=0", err, sizeof err) == 0 && w.train_mean_loss_weight == 0);
    expect_error("{\"train\": {\"mean_loss_weight\": -1}}", "train.mean_loss_weight");
    expect_error("{\"train\": {\"mean_loss_weight\": 1e6}}", "train.mean_loss_weight");
    expect_error("[1, 2]", "not a JSON object");
    expect_error("{\"model\": ", "not a JSON object");

    /* the idempotency window: a time and a cap; the old count key is an
     * alias of the cap, not shown on the start line */
    LtvdConfig d;
    config_defaults(&d);
    ASSERT(d.limits_dedupe_window_s == 600 && d.limits_dedupe_max_ids == 4000000);
    ASSERT(config_apply_json(&d, "{\"limits\": {\"dedupe_window\": 250}}", err, sizeof err) == 0);
    ASSERT(d.limits_dedupe_max_ids == 250 && d.limits_dedupe_window_s == 600);
    ASSERT(config_apply_set(&d, "limits.dedupe_window_s=0", err, sizeof err) == 0 && d.limits_dedupe_window_s == 0);
    expect_error("{\"limits\": {\"dedupe_window_s\": -1}}", "limits.dedupe_window_s");
    expect_error("{\"limits\": {\"dedupe_max_ids\": 0}}", "limits.dedupe_max_ids");
    char line[4096];
    config_format(&d, line, sizeof line);
    ASSERT(strstr(line, "limits.dedupe_max_ids=250") && strstr(line, "limits.dedupe_window_s=0"));
    ASSERT(!strstr(line, "limits.dedupe_window="));

    config_format(&c, line, sizeof line);
    ASSERT(strstr(line, "auth.admin_token=\"<set>\"") && !strstr(line, "s3cret"));
    ASSERT(c.model_keep == 5);

    /* reload: which keys may change, and the names of those that did */
    LtvdConfig next = c;
    char changed[256];
    ASSERT(config_diff(&c, &next, changed, sizeof changed, err, sizeof err) == 0 && changed[0] == '\0');
    ASSERT(config_apply_set(&next, "auth.read_token=r2", err, sizeof err) == 0);
    ASSERT(config_apply_set(&next, "log.level=warn", err, sizeof err) == 0);
    ASSERT(config_diff(&c, &next, changed, sizeof changed, err, sizeof err) == 0);
    ASSERT(strcmp(changed, "auth.read_token,log.level") == 0);
    ASSERT(config_apply_set(&next, "server.threads=4", err, sizeof err) == 0);
    ASSERT(config_diff(&c, &next, changed, sizeof changed, err, sizeof err) == -EINVAL);
    ASSERT(strstr(err, "server.threads") && strstr(err, "restart"));
    ASSERT(config_key_reloadable("auth.admin_token") && config_key_reloadable("limits.max_batch_ids"));
    ASSERT(!config_key_reloadable("limits.max_users") && !config_key_reloadable("storage.dir"));
    ASSERT(!config_key_reloadable("no.such_key"));
    ASSERT(config_key_reloadable("server.access_log") && config_key_reloadable("limits.max_body_bytes"));
    ASSERT(config_key_reloadable("log.format"));
    /* log.format: logfmt by default, or json */
    LtvdConfig fmt = c;
    ASSERT(fmt.log_format == LOG_FORMAT_LOGFMT);
    ASSERT(config_apply_set(&fmt, "log.format=json", err, sizeof err) == 0 && fmt.log_format == LOG_FORMAT_JSON);
    ASSERT(config_apply_set(&fmt, "log.format=xml", err, sizeof err) != 0 && strstr(err, "log.format"));
    /* the dedupe window sizes a table: a restart; a change named by its key, not the alias */
    LtvdConfig window = c;
    ASSERT(config_apply_set(&window, "limits.dedupe_window=99", err, sizeof err) == 0);
    ASSERT(config_diff(&c, &window, changed, sizeof changed, err, sizeof err) == -EINVAL);
    ASSERT(strstr(err, "limits.dedupe_max_ids") && !config_key_reloadable("limits.dedupe_window_s"));
    /* a string compared by its text, not the bytes after it */
    LtvdConfig shorter = c;
    ASSERT(config_apply_set(&shorter, "auth.admin_token=s3cret-and-more", err, sizeof err) == 0);
    ASSERT(config_apply_set(&shorter, "auth.admin_token=s3cret", err, sizeof err) == 0);
    ASSERT(config_diff(&c, &shorter, changed, sizeof changed, err, sizeof err) == 0 && changed[0] == '\0');

    /* the live copy: a copy, and a bounded number of them */
    ASSERT(config_live() == NULL);
    ASSERT(config_publish(&c, err, sizeof err) == 0);
    const LtvdConfig *first = config_live();
    ASSERT(first && first != &c && first->server_port == c.server_port);
    for (int i = 1; i < CONFIG_VERSIONS_MAX; i++)
        ASSERT(config_publish(&next, err, sizeof err) == 0);
    ASSERT(config_live()->server_threads == 4 && first->server_threads == c.server_threads);
    ASSERT(config_publish(&c, err, sizeof err) == -ENOSPC && strstr(err, "restart"));
    ASSERT(config_live()->server_threads == 4);
    config_live_free();
    ASSERT(config_live() == NULL);
    TEST_DONE("test_config");
}
