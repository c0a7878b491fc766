/* petrel: command line (Envoy's flags for what petrel supports), then the server. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/buf.h"
#include "proxy/log.h"
#include "proxy/server.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: petrel -c <config> [options]\n"
            "\n"
            "  -c, --config-path <file>   bootstrap config (Envoy v3), .json, .yaml or .yml\n"
            "      --concurrency <n>      worker threads (default: number of CPUs)\n"
            "  -l, --log-level <level>    trace, debug, info, warning, error, critical, off\n"
            "                             (default: info)\n"
            "      --mode <serve|validate>\n"
            "                             validate: check the config, print every error,\n"
            "                             exit 0 if valid, 1 if not; binds nothing\n"
            "      --drain-time-s <s>     on SIGTERM, how long open connections may finish\n"
            "                             (default: 600)\n"
            "      --version              print the version and exit\n"
            "  -h, --help                 this help\n");
}

static char *join_argv(int argc, char **argv)
{
    size_t n = 1;
    for (int i = 0; i < argc; i++)
        n += strlen(argv[i]) + 1;
    char *s = malloc(n), *p = s;
    if (s == NULL)
        return NULL;
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(argv[i]);
        memcpy(p, argv[i], l);
        p += l;
        *p++ = i + 1 < argc ? ' ' : '\0';
    }
    if (argc == 0)
        *p = '\0';
    return s;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_CONCURRENCY = 256, OPT_MODE, OPT_DRAIN, OPT_VERSION };
    static const struct option longopts[] = {
        {"config-path", required_argument, NULL, 'c'},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"log-level", required_argument, NULL, 'l'},
        {"mode", required_argument, NULL, OPT_MODE},
        {"drain-time-s", required_argument, NULL, OPT_DRAIN},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    pt_options_t opts = {0};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    opts.concurrency = cpus > 0 ? (unsigned)cpus : 1;
    opts.drain_time_s = 600;
    opts.log_level = "info";
    int ch;
    unsigned long v;
    while ((ch = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            opts.config_path = optarg;
            break;
        case 'l':
            opts.log_level = optarg;
            break;
        case OPT_CONCURRENCY:
            if (parse_uint(optarg, 128, &v) != 0 || v == 0) {
                fprintf(stderr, "error: --concurrency: \"%s\" is not a number in [1, 128]\n",
                        optarg);
                return 1;
            }
            opts.concurrency = (unsigned)v;
            break;
        case OPT_MODE:
            if (strcmp(optarg, "validate") == 0) {
                opts.validate_only = 1;
            } else if (strcmp(optarg, "serve") != 0) {
                fprintf(stderr, "error: --mode: \"%s\" is not serve or validate\n", optarg);
                return 1;
            }
            break;
        case OPT_DRAIN:
            if (parse_uint(optarg, 86400, &v) != 0) {
                fprintf(stderr, "error: --drain-time-s: \"%s\" is not a number of seconds\n",
                        optarg);
                return 1;
            }
            opts.drain_time_s = (double)v;
            break;
        case OPT_VERSION:
            printf("petrel version %s\n", PT_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    if (opts.config_path == NULL) {
        fprintf(stderr, "error: a config file is required (-c <file>)\n");
        usage(stderr);
        return 1;
    }
    pt_log_level_t level;
    if (pt_log_level_parse(opts.log_level, &level) != 0) {
        fprintf(stderr, "error: --log-level: \"%s\" is not a log level\n", opts.log_level);
        return 1;
    }
    pt_log_threshold = level;

    /* A server ignores SIGHUP from the start (while its config loads too, before the loop
     * logs each one); a one-shot validation ends on it like any command. */
    if (!opts.validate_only)
        signal(SIGHUP, SIG_IGN);
    pt_server_t server;
    opts.command_line = join_argv(argc, argv);
    if (pt_server_init(&server, &opts) != 0) {
        pt_server_dispose(&server);
        free(opts.command_line);
        return 1;
    }
    if (opts.validate_only) {
        printf("configuration '%s' OK\n", opts.config_path);
        pt_server_dispose(&server);
        free(opts.command_line);
        return 0;
    }
    int rc = pt_server_run(&server);
    pt_server_dispose(&server);
    free(opts.command_line);
    return rc;
}
