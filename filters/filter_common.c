#include "filters/filter_common.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/conn_manager.h"
#include "proxy/formatter.h"
#include "proxy/grpc.h"
#include "proxy/random.h"
#include "tls/transport.h"

/* "<json>" of v for error messages. */
static void dump(json_t *v, char *out, size_t len)
{
    char *d = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    snprintf(out, len, "%s", d ? d : "?");
    free(d);
}

/* ---- FractionalPercent --------------------------------------------------------------- */

static const char *const denominator_names[] = {"HUNDRED", "TEN_THOUSAND", "MILLION", NULL};
static const uint32_t denominator_values[] = {100, 10000, 1000000};

int pt_fractional_percent_parse(pt_cfg_t *r, pt_fractional_percent_t *out)
{
    size_t before = r->nerrors;
    uint64_t num;
    pt_cfg_uint(r, "numerator", &num, 0, 0, UINT32_MAX);
    out->numerator = (uint32_t)num;
    out->denominator = 100;
    int e;
    if (pt_cfg_enum_or_number(r, "denominator", denominator_names, &e, 0) > 0)
        out->denominator = denominator_values[e];
    return r->nerrors == before ? 0 : -1;
}

int pt_fractional_percent_field(pt_cfg_t *r, const char *field, pt_fractional_percent_t *out,
                                pt_fractional_percent_t def)
{
    *out = def;
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    int ok = pt_fractional_percent_parse(r, out);
    pt_cfg_leave(r);
    if (ok != 0) {
        *out = def;
        return -1;
    }
    return 1;
}

int pt_runtime_fractional_percent_field(pt_cfg_t *r, const char *field,
                                        pt_fractional_percent_t *out, pt_fractional_percent_t def)
{
    *out = def;
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    size_t before = r->nerrors;
    /* runtime_key: petrel has no runtime layer; the default always applies. */
    const char *key;
    pt_cfg_string(r, "runtime_key", &key, NULL);
    int drc = pt_fractional_percent_field(r, "default_value", out, def);
    if (drc == 0)
        pt_cfg_error(r, "default_value", "is required");
    pt_cfg_leave(r);
    if (r->nerrors != before) {
        *out = def;
        return -1;
    }
    return 1;
}

int pt_fractional_percent_sample(const pt_fractional_percent_t *p)
{
    if (p->numerator == 0)
        return 0;
    if (p->numerator >= p->denominator)
        return 1;
    return pt_random_below(p->denominator) < p->numerator;
}

int pt_cfg_enum_or_number(pt_cfg_t *r, const char *field, const char *const *values, int *out,
                          int def)
{
    *out = def;
    json_t *v = pt_cfg_has(r, field) ? pt_cfg_get(r, field) : NULL;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return pt_cfg_enum(r, field, values, NULL, out, def);
    json_int_t i = json_integer_value(v);
    int n = 0;
    while (values[n] != NULL)
        n++;
    if (i < 0 || i >= n) {
        pt_cfg_error(r, field, "%lld is not a valid enum value", (long long)i);
        return -1;
    }
    *out = (int)i;
    return 1;
}

/* ---- HttpStatus ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int code;
} status_codes[] = {
    {"Continue", 100},
    {"OK", 200},
    {"Created", 201},
    {"Accepted", 202},
    {"NonAuthoritativeInformation", 203},
    {"NoContent", 204},
    {"ResetContent", 205},
    {"PartialContent", 206},
    {"MultiStatus", 207},
    {"AlreadyReported", 208},
    {"IMUsed", 226},
    {"MultipleChoices", 300},
    {"MovedPermanently", 301},
    {"Found", 302},
    {"SeeOther", 303},
    {"NotModified", 304},
    {"UseProxy", 305},
    {"TemporaryRedirect", 307},
    {"PermanentRedirect", 308},
    {"BadRequest", 400},
    {"Unauthorized", 401},
    {"PaymentRequired", 402},
    {"Forbidden", 403},
    {"NotFound", 404},
    {"MethodNotAllowed", 405},
    {"NotAcceptable", 406},
    {"ProxyAuthenticationRequired", 407},
    {"RequestTimeout", 408},
    {"Conflict", 409},
    {"Gone", 410},
    {"LengthRequired", 411},
    {"PreconditionFailed", 412},
    {"PayloadTooLarge", 413},
    {"URITooLong", 414},
    {"UnsupportedMediaType", 415},
    {"RangeNotSatisfiable", 416},
    {"ExpectationFailed", 417},
    {"MisdirectedRequest", 421},
    {"UnprocessableEntity", 422},
    {"Locked", 423},
    {"FailedDependency", 424},
    {"UpgradeRequired", 426},
    {"PreconditionRequired", 428},
    {"TooManyRequests", 429},
    {"RequestHeaderFieldsTooLarge", 431},
    {"InternalServerError", 500},
    {"NotImplemented", 501},
    {"BadGateway", 502},
    {"ServiceUnavailable", 503},
    {"GatewayTimeout", 504},
    {"HTTPVersionNotSupported", 505},
    {"VariantAlsoNegotiates", 506},
    {"InsufficientStorage", 507},
    {"LoopDetected", 508},
    {"NotExtended", 510},
    {"NetworkAuthenticationRequired", 511},
};
#define NSTATUS (sizeof(status_codes) / sizeof(status_codes[0]))

int pt_http_status_field(pt_cfg_t *r, const char *field, int *out, int def)
{
    *out = def;
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    int result = 1;
    json_t *v = pt_cfg_get(r, "code");
    char tmp[128];
    if (v == NULL) {
        pt_cfg_error(r, "code", "is required");
        result = -1;
    } else if (json_is_integer(v) || json_is_string(v)) {
        int found = 0;
        for (size_t i = 0; i < NSTATUS && !found; i++) {
            if (json_is_integer(v) ? json_integer_value(v) == status_codes[i].code
                                   : strcmp(json_string_value(v), status_codes[i].name) == 0) {
                *out = status_codes[i].code;
                found = 1;
            }
        }
        if (!found) {
            dump(v, tmp, sizeof(tmp));
            pt_cfg_error(r, "code", "%s is not a defined HTTP status code (StatusCode)", tmp);
            result = -1;
        }
    } else {
        dump(v, tmp, sizeof(tmp));
        pt_cfg_error(r, "code", "%s is not an enum name or number", tmp);
        result = -1;
    }
    pt_cfg_leave(r);
    return result;
}

/* ---- gRPC ------------------------------------------------------------------------------ */

void pt_http_grpc_local_reply(pt_http_stream_t *s, int grpc_status, const char *message,
                              const pt_http_headers_t *extra, uint32_t flags, const char *details)
{
    pt_http_headers_t *h = pt_arena_alloc(&s->arena, sizeof(*h));
    if (h == NULL) {
        pt_http_stream_reset(s, flags, details);
        return;
    }
    pt_http_headers_init(h, &s->arena);
    int err = 0;
    if (extra != NULL)
        for (uint32_t i = 0; i < extra->count; i++)
            err |= pt_http_headers_add_str(h, extra->items[i].name, extra->items[i].value);
    if (err != 0 || pt_grpc_add_status(h, grpc_status, message) != 0) {
        pt_http_stream_reset(s, flags, details);
        return;
    }
    pt_http_stream_local_reply(s, 200, "", h, flags, details);
}

const char *pt_transport_failure_reason(pt_arena_t *a, int status)
{
    if (status == 0 || status == -ETIMEDOUT)
        return NULL;
    const char *tls = status == -EPROTO ? pt_tls_last_handshake_failure() : NULL;
    char *out = tls != NULL ? pt_arena_strdup(a, tls)
                            : pt_arena_sprintf(a, "delayed_connect_error:_%s", strerror(-status));
    for (char *p = out; p != NULL && *p; p++)
        if (*p == ' ')
            *p = '_';
    return out;
}
