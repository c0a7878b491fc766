/* TLS settings from the config: DownstreamTlsContext / UpstreamTlsContext parsed into
 * pt_tls_settings_t, and the DataSource reader. No OpenSSL calls here, so configs without
 * TLS never load the TLS module (tls/module.h); tls/context.c turns settings into contexts.
 */
#include "tls/context.h"
#include "tls/secret.h"
#include "proxy/cluster.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES (4u << 20)

/* ======================================================================================
 * Config
 * ====================================================================================== */

int pt_data_source_parse(pt_cfg_t *r, pt_arena_t *a, const char *field, pt_data_source_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    static const char *const unsupported[] = {"environment_variable", "watched_directory", NULL};
    static const char *const sources[] = {"filename", "inline_string", "inline_bytes", NULL};
    pt_cfg_unsupported(r, unsupported);
    const char *fn = NULL, *is = NULL, *ib = NULL;
    int found = pt_cfg_oneof(r, sources, !pt_cfg_has_any(r, unsupported));
    if (found == 0)
        pt_cfg_string(r, "filename", &fn, NULL);
    else if (found == 1)
        pt_cfg_string(r, "inline_string", &is, NULL);
    else if (found == 2)
        pt_cfg_string(r, "inline_bytes", &ib, NULL);
    int ok = 1;
    if (fn == NULL && is == NULL && ib == NULL) {
        ok = -1; /* reported: none, several, not a string, or not supported */
    } else if (fn != NULL) {
        out->filename = pt_arena_strdup(a, fn);
    } else if (is != NULL) {
        out->inline_data = pt_arena_strdup(a, is);
        out->inline_len = strlen(is);
    } else if (ib != NULL) {
        unsigned char *dec = pt_arena_alloc(a, strlen(ib) / 4 * 3 + 4);
        long dlen = pt_base64_decode(ib, dec);
        if (dlen < 0) {
            pt_cfg_error(r, "inline_bytes", "is not valid base64");
            ok = -1;
        } else {
            dec[dlen] = '\0'; /* PEM readers take it as a C string too */
            out->inline_data = (const char *)dec;
            out->inline_len = (size_t)dlen;
        }
    }
    pt_cfg_leave(r);
    return ok;
}

char *pt_data_source_read(const pt_data_source_t *ds, size_t *len, char *err, size_t errlen)
{
    if (ds->inline_data != NULL) {
        char *p = malloc(ds->inline_len + 1);
        if (p == NULL) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        memcpy(p, ds->inline_data, ds->inline_len);
        p[ds->inline_len] = '\0';
        if (len)
            *len = ds->inline_len;
        return p;
    }
    if (ds->filename == NULL) {
        snprintf(err, errlen, "no data source");
        return NULL;
    }
    return pt_read_file(ds->filename, MAX_FILE_BYTES, len, err, errlen);
}

static const char *const version_names[] = {"TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2",
                                             "TLSv1_3", NULL};
static const int version_values[] = {0, TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION,
                                     TLS1_3_VERSION};

/* BoringSSL's equal-preference groups "[A|B]" (which Envoy configs use) become "A:B". */
static char *cipher_list(pt_cfg_t *r, pt_arena_t *a, const char *field)
{
    int present;
    size_t n = pt_cfg_array(r, field, &present);
    if (!present)
        return NULL;
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        json_t *v = pt_cfg_index_value(r, i);
        if (!json_is_string(v)) {
            size_t saved = strlen(pt_cfg_path(r));
            pt_cfg_push_index(r, i);
            pt_cfg_error(r, NULL, "is not a string");
            pt_cfg_pop_path(r, saved);
            continue;
        }
        total += strlen(json_string_value(v)) + 1;
    }
    char *out = pt_arena_alloc(a, total), *p = out;
    for (size_t i = 0; i < n; i++) {
        json_t *v = pt_cfg_index_value(r, i);
        if (!json_is_string(v))
            continue;
        if (p != out)
            *p++ = ':';
        for (const char *s = json_string_value(v); *s; s++) {
            if (*s == '[' || *s == ']')
                continue;
            *p++ = *s == '|' ? ':' : *s;
        }
    }
    *p = '\0';
    pt_cfg_leave_array(r);
    return out;
}

static void parse_tls_params(pt_cfg_t *r, pt_arena_t *a, pt_tls_settings_t *t)
{
    t->min_version = TLS1_2_VERSION;
    t->max_version = TLS1_3_VERSION;
    if (pt_cfg_enter(r, "tls_params") <= 0)
        return;
    static const char *const unsupported[] = {"signature_algorithms",
                                              "compliance_policies", NULL};
    pt_cfg_unsupported(r, unsupported);
    int v;
    if (pt_cfg_enum(r, "tls_minimum_protocol_version", version_names, NULL, &v, 0) > 0 && v)
        t->min_version = version_values[v];
    if (pt_cfg_enum(r, "tls_maximum_protocol_version", version_names, NULL, &v, 0) > 0 && v)
        t->max_version = version_values[v];
    if (t->min_version > t->max_version)
        pt_cfg_error(r, "tls_minimum_protocol_version",
                     "is higher than tls_maximum_protocol_version");
    t->cipher_suites = cipher_list(r, a, "cipher_suites");
    t->ecdh_curves = cipher_list(r, a, "ecdh_curves");
    pt_cfg_leave(r);
}

static const char *const san_type_names[] = {"SAN_TYPE_UNSPECIFIED", "DNS", "URI", "EMAIL",
                                             "IP_ADDRESS", NULL};
static const char *const san_type_known[] = {"OTHER_NAME", NULL};

static void parse_validation(pt_cfg_t *r, pt_arena_t *a, pt_tls_settings_t *t)
{
    static const char *const unsupported[] = {
        "verify_certificate_spki", "verify_certificate_hash", "crl", "allow_expired_certificate",
        "custom_validator_config", "watched_directory", "only_verify_leaf_cert_crl",
        "max_verify_depth", "system_root_certs", "ca_certificate_provider_instance",
        "custom_signer_config", NULL};
    pt_cfg_unsupported(r, unsupported);
    if (pt_data_source_parse(r, a, "trusted_ca", &t->trusted_ca) > 0)
        t->has_validation = 1;
    static const char *const trust_names[] = {"VERIFY_TRUST_CHAIN", "ACCEPT_UNTRUSTED", NULL};
    int trust;
    pt_cfg_enum(r, "trust_chain_verification", trust_names, NULL, &trust, 0);
    t->trust_chain_verification_accept_untrusted = trust == 1;

    int p1, p2;
    size_t n1 = pt_cfg_array(r, "match_typed_subject_alt_names", &p1);
    if (p1)
        pt_cfg_leave_array(r);
    size_t n2 = pt_cfg_array(r, "match_subject_alt_names", &p2);
    if (p2)
        pt_cfg_leave_array(r);
    pt_san_matcher_t *m = pt_arena_alloc(a, (n1 + n2 + 1) * sizeof(*m));
    unsigned count = 0;
    if (p1) {
        pt_cfg_array(r, "match_typed_subject_alt_names", NULL);
        for (size_t i = 0; i < n1; i++) {
            if (pt_cfg_enter_index(r, i) <= 0)
                continue;
            int type;
            if (pt_cfg_enum(r, "san_type", san_type_names, san_type_known, &type, 0) >= 0 &&
                type == 0)
                pt_cfg_error(r, "san_type", "is required");
            m[count].type = type == 1   ? PT_SAN_DNS
                            : type == 2 ? PT_SAN_URI
                            : type == 3 ? PT_SAN_EMAIL
                                        : PT_SAN_IP;
            if (pt_cfg_enter(r, "matcher") > 0) {
                pt_string_matcher_parse(r, a, &m[count].matcher);
                pt_cfg_leave(r);
                count++;
            } else {
                pt_cfg_error(r, "matcher", "is required");
            }
            static const char *const oid_unsupported[] = {"oid", NULL};
            pt_cfg_unsupported(r, oid_unsupported);
            pt_cfg_leave(r);
        }
        pt_cfg_leave_array(r);
    }
    if (p2) {
        pt_cfg_array(r, "match_subject_alt_names", NULL);
        for (size_t i = 0; i < n2; i++) {
            if (pt_cfg_enter_index(r, i) <= 0)
                continue;
            m[count].type = PT_SAN_ANY;
            pt_string_matcher_parse(r, a, &m[count].matcher);
            count++;
            pt_cfg_leave(r);
        }
        pt_cfg_leave_array(r);
    }
    t->san_matchers = m;
    t->nsan_matchers = count;
    /* As Envoy: matching SANs needs a chain to trust first. */
    if (count > 0 && !t->has_validation)
        pt_cfg_error(r, NULL, "SAN matchers need trusted_ca");
}

/* An SdsSecretConfig: the secret's name and its sds_config (a ConfigSource: a file, the
 * ADS stream, or a control plane of its own). */
static const pt_sds_ref_t *parse_sds_ref(pt_cfg_t *r, pt_arena_t *a)
{
    pt_sds_ref_t *ref = pt_arena_alloc(a, sizeof(*ref));
    const char *name;
    if (pt_cfg_string(r, "name", &name, NULL) == 0 || (name != NULL && name[0] == '\0'))
        pt_cfg_error(r, "name", "is required");
    else
        pt_config_no_xdstp(r, "name", name);
    ref->name = pt_arena_strdup(a, name ? name : "");
    if (pt_config_source_parse(r, a, "sds_config", &ref->source) == 0)
        pt_cfg_error(r, "sds_config", "is required (petrel has no static secrets)");
    return ref;
}

static void (*secrets_hook)(void *data);
static void *secrets_hook_data;

void pt_tls_set_secrets_hook(void (*fn)(void *data), void *data)
{
    secrets_hook = fn;
    secrets_hook_data = data;
}

void pt_tls_secrets_changed(void)
{
    if (secrets_hook != NULL)
        secrets_hook(secrets_hook_data);
}

static void parse_common(pt_cfg_t *r, pt_arena_t *a, pt_tls_settings_t *t)
{
    static const char *const unsupported[] = {
        "tls_certificate_provider_instance", "tls_certificate_certificate_provider",
        "tls_certificate_certificate_provider_instance",
        "validation_context_certificate_provider", "validation_context_certificate_provider_instance",
        "custom_handshaker", "key_log", "custom_tls_certificate_selector", NULL};
    pt_cfg_unsupported(r, unsupported);
    parse_tls_params(r, a, t);
    int present;
    size_t n = pt_cfg_array(r, "tls_certificates", &present);
    /* Envoy takes one certificate per key type: an RSA and an ECDSA one at most. */
    if (n > 2)
        pt_cfg_error(r, NULL, "at most two certificates are supported (one RSA and one "
                              "ECDSA)");
    for (size_t i = 0; i < n && i < 2; i++) {
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        static const char *const cert_unsupported[] = {
            "password", "watched_directory", "pkcs12", "private_key_provider", "ocsp_staple",
            "signed_certificate_timestamp", NULL};
        pt_cfg_unsupported(r, cert_unsupported);
        pt_data_source_t *chain = i == 0 ? &t->cert_chain : &t->cert_chain2;
        pt_data_source_t *key = i == 0 ? &t->private_key : &t->private_key2;
        if (pt_data_source_parse(r, a, "certificate_chain", chain) == 0)
            pt_cfg_error(r, "certificate_chain", "is required");
        if (pt_data_source_parse(r, a, "private_key", key) == 0)
            pt_cfg_error(r, "private_key", "is required");
        if (i == 0)
            t->has_cert = 1;
        else
            t->has_cert2 = 1;
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    n = pt_cfg_array(r, "tls_certificate_sds_secret_configs", &present);
    if (n > 1)
        pt_cfg_error(r, NULL, "more than one certificate is not supported");
    if (n >= 1 && pt_cfg_enter_index(r, 0) > 0) {
        if (t->has_cert)
            pt_cfg_error(r, NULL, "tls_certificates and tls_certificate_sds_secret_configs "
                                  "cannot both be set");
        t->cert_sds = parse_sds_ref(r, a);
        t->has_cert = 1;
        pt_cfg_leave(r);
    }
    if (present)
        pt_cfg_leave_array(r);
    /* One of them (Envoy's validation_context_type). */
    static const char *const validation_kinds[] = {"validation_context",
                                                   "validation_context_sds_secret_config",
                                                   "combined_validation_context", NULL};
    int kind = pt_cfg_oneof(r, validation_kinds, 0);
    if (kind == 0 && pt_cfg_enter(r, "validation_context") > 0) {
        /* An empty validation context verifies nothing (Envoy): only trusted_ca turns
         * verification on. */
        parse_validation(r, a, t);
        pt_cfg_leave(r);
    } else if (kind == 1 && pt_cfg_enter(r, "validation_context_sds_secret_config") > 0) {
        t->validation_sds = parse_sds_ref(r, a);
        t->has_validation = 1;
        pt_cfg_leave(r);
    } else if (kind == 2 && pt_cfg_enter(r, "combined_validation_context") > 0) {
        /* The CA by SDS, the rest (SAN matchers, trust_chain_verification) from
         * default_validation_context: what Istio writes. */
        static const char *const cvc_unsupported[] = {
            "validation_context_certificate_provider",
            "validation_context_certificate_provider_instance", NULL};
        pt_cfg_unsupported(r, cvc_unsupported);
        if (pt_cfg_enter(r, "validation_context_sds_secret_config") > 0) {
            t->validation_sds = parse_sds_ref(r, a);
            t->has_validation = 1;
            pt_cfg_leave(r);
        } else if (!pt_cfg_has_any(r, cvc_unsupported)) {
            pt_cfg_error(r, "validation_context_sds_secret_config", "is required");
        }
        if (pt_cfg_enter(r, "default_validation_context") > 0) {
            parse_validation(r, a, t);
            if (t->trusted_ca.filename != NULL || t->trusted_ca.inline_data != NULL)
                pt_cfg_error(r, "trusted_ca", "and validation_context_sds_secret_config both "
                                              "give the trusted CA (petrel takes one)");
            pt_cfg_leave(r);
        } else {
            pt_cfg_error(r, "default_validation_context", "is required");
        }
        pt_cfg_leave(r);
    }
    /* ALPN: wire format, each name length-prefixed. As Envoy, the entries are joined with
     * commas and split again, so "h2,http/1.1" (one entry, as Envoy's edge best-practices
     * config writes it) is two names. */
    n = pt_cfg_array(r, "alpn_protocols", &present);
    if (present) {
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *v = pt_cfg_index_value(r, i);
            total += json_is_string(v) ? strlen(json_string_value(v)) + 1 : 0;
        }
        unsigned char *w = pt_arena_alloc(a, total + 1), *p = w;
        if (w == NULL)
            pt_cfg_error(r, NULL, "out of memory");
        for (size_t i = 0; w != NULL && i < n; i++) {
            json_t *v = pt_cfg_index_value(r, i);
            const char *name = json_is_string(v) ? json_string_value(v) : "";
            size_t saved = strlen(pt_cfg_path(r));
            pt_cfg_push_index(r, i);
            if (!json_is_string(v) || name[0] == '\0')
                pt_cfg_error(r, NULL, "is not a protocol name (1 to 255 characters)");
            for (const char *q = name; json_is_string(v) && name[0] != '\0';) {
                const char *comma = strchr(q, ',');
                size_t l = comma != NULL ? (size_t)(comma - q) : strlen(q);
                if (l == 0 || l > 255) {
                    pt_cfg_error(r, NULL, "\"%.*s\": each comma-separated protocol name must "
                                          "have 1 to 255 characters",
                                 (int)(strlen(name) > 300 ? 300 : strlen(name)), name);
                    break;
                }
                *p++ = (unsigned char)l;
                memcpy(p, q, l);
                p += l;
                if (comma == NULL)
                    break;
                q = comma + 1;
            }
            pt_cfg_pop_path(r, saved);
        }
        t->alpn = w;
        t->alpn_len = (size_t)(p - w);
        pt_cfg_leave_array(r);
    }
}

pt_tls_settings_t *pt_tls_settings_parse(pt_cfg_t *r, pt_arena_t *a, int server)
{
    size_t errors_before = r->nerrors;
    pt_tls_settings_t *t = pt_arena_alloc(a, sizeof(*t));
    t->server = server;
    if (server) {
        static const char *const unsupported[] = {
            "require_sni", "session_ticket_keys", "session_ticket_keys_sds_secret_config",
            "session_timeout", "ocsp_staple_policy", "full_scan_certs_on_sni_mismatch",
            "prefer_client_ciphers", "disable_stateful_session_resumption", NULL};
        pt_cfg_unsupported(r, unsupported);
        pt_cfg_bool(r, "require_client_certificate", &t->require_client_certificate, 0);
        int dis;
        pt_cfg_bool(r, "disable_stateless_session_resumption", &dis, 0);
        if (dis)
            pt_cfg_error(r, "disable_stateless_session_resumption", "true is not supported");
    } else {
        static const char *const unsupported[] = {"max_session_keys", "auto_sni_san_validation",
                                                  "enforce_rsa_key_usage", NULL};
        pt_cfg_unsupported(r, unsupported);
        const char *sni;
        pt_cfg_string(r, "sni", &sni, NULL);
        t->sni = pt_arena_strdup(a, sni);
        pt_cfg_bool(r, "auto_host_sni", &t->auto_host_sni, 0);
        if (t->auto_host_sni)
            pt_cfg_error(r, "auto_host_sni", "true is not supported yet (set sni)");
        pt_cfg_bool(r, "allow_renegotiation", &t->allow_renegotiation, 0);
        if (t->allow_renegotiation)
            pt_cfg_error(r, "allow_renegotiation", "true is not supported (renegotiation is "
                                                   "always refused)");
    }
    if (pt_cfg_enter(r, "common_tls_context") > 0) {
        parse_common(r, a, t);
        pt_cfg_leave(r);
    } else {
        t->min_version = TLS1_2_VERSION;
        t->max_version = TLS1_3_VERSION;
    }
    if (server && !t->has_cert)
        pt_cfg_error(r, "common_tls_context", "a server TLS context needs a certificate "
                                              "(tls_certificates or "
                                              "tls_certificate_sds_secret_configs)");
    if (t->require_client_certificate && !t->has_validation)
        pt_cfg_error(r, "require_client_certificate",
                     "needs a validation_context with trusted_ca to verify clients");
    return r->nerrors == errors_before ? t : NULL;
}

int pt_tls_transport_socket_parse(pt_cfg_t *r, pt_arena_t *a, const char *field, int server,
                                  pt_tls_settings_t **out)
{
    *out = NULL;
    int rc = pt_cfg_enter(r, field);
    if (rc <= 0)
        return rc;
    const char *name;
    pt_cfg_string(r, "name", &name, NULL);
    int arc;
    const char *type = pt_cfg_enter_any(r, "typed_config", &arc);
    int result = 0;
    if (type == NULL) {
        if (arc == 0 && name != NULL && strcmp(name, "envoy.transport_sockets.raw_buffer") == 0) {
            result = 0;
        } else if (arc == 0) {
            pt_cfg_error(r, "typed_config", "is required");
            result = -1;
        } else {
            result = -1;
        }
    } else if (strcmp(type, "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3"
                            ".RawBuffer") == 0) {
        pt_cfg_leave(r);
    } else if (strcmp(type, server ? "type.googleapis.com/envoy.extensions.transport_sockets.tls"
                                     ".v3.DownstreamTlsContext"
                                   : "type.googleapis.com/envoy.extensions.transport_sockets.tls"
                                     ".v3.UpstreamTlsContext") == 0) {
        *out = pt_tls_settings_parse(r, a, server);
        result = *out ? 1 : -1;
        pt_cfg_leave(r);
    } else {
        pt_cfg_error(r, "@type", "\"%s\" is not a supported %s transport socket", type,
                     server ? "downstream" : "upstream");
        pt_cfg_skip_rest(r);
        pt_cfg_leave(r);
        result = -1;
    }
    pt_cfg_leave(r);
    return result;
}

/* Contexts whose snapshot went on a worker (its last session, its adoption of a newer
 * snapshot): freed by the main thread (pt_tls_contexts_reap), which alone touches the SDS
 * providers and subscriptions they are attached to. */
static pthread_mutex_t reap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct reap_ctx {
    pt_tls_context_t *ctx;
    struct reap_ctx *next;
} *to_reap;

static void free_tls_ctx(void *arg)
{
    if (pt_cluster_states_on_main_thread()) {
        pt_tls_context_free(arg);
        return;
    }
    struct reap_ctx *r = malloc(sizeof(*r));
    if (r == NULL) {
        pt_tls_context_free(arg); /* out of memory: as before, at once */
        return;
    }
    r->ctx = arg;
    pthread_mutex_lock(&reap_lock);
    r->next = to_reap;
    to_reap = r;
    pthread_mutex_unlock(&reap_lock);
}

void pt_tls_contexts_reap(void)
{
    pthread_mutex_lock(&reap_lock);
    struct reap_ctx *list = to_reap;
    to_reap = NULL;
    pthread_mutex_unlock(&reap_lock);
    while (list != NULL) {
        struct reap_ctx *r = list;
        list = r->next;
        pt_tls_context_free(r->ctx);
        free(r);
    }
}

pt_tls_context_t *pt_tls_context_build(pt_cfg_t *r, pt_arena_t *arena,
                                       const pt_tls_settings_t *t, const char *scope,
                                       const char *owner, const char *where)
{
    char err[512];
    pt_tls_context_t *ctx = pt_tls_context_new(t, scope, owner, err, sizeof(err));
    if (ctx == NULL) {
        pt_cfg_error_at(r, "%s: %s", where, err);
        return NULL;
    }
    pt_arena_defer(arena, free_tls_ctx, ctx);
    if (pt_secret_attach(ctx, err, sizeof(err)) != 0)
        pt_cfg_error_at(r, "%s: %s", where, err);
    return ctx;
}
